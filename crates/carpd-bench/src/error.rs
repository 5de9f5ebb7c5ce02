//! The benchmark's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Command(String),
    #[error("set-up: {0}")]
    Setup(String),
    #[error("measurement: {0}")]
    Measure(String),
    #[error(transparent)]
    Testbed(#[from] carpd_testbed::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
