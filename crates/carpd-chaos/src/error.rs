//! The tool's one error type: what kept a run from being carried out (a
//! failed invariant is not an error but a finding of the run).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("set-up: {0}")]
    Setup(String),
    #[error("{0}")]
    Command(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Bed(#[from] carpd_testbed::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
