//! The resolve pass: what the validated file names outside itself. Reads
//! the password files and variables ([`Secret`]s) and gives each VHID its
//! key, and looks up `control_group` in the group database.

use std::collections::HashMap;
use std::path::Path;

use carp_engine::VhidKey;

use super::cascade::{At, Secret, SecretSource};
use super::diag::Diagnostics;
use super::validate::Draft;
use super::{Config, ControlGroup, UCARP_MAX_KEY};
use crate::error::Error;

/// Longest first line read from a password file: far more than any key
/// (only 19 bytes count), and a bound for a file like `/dev/zero`.
pub(super) const MAX_PASSWORD_LINE: u64 = 64 * 1024;

/// Read the secrets and look up the groups `draft` names.
pub(super) fn resolve(diag: &Diagnostics<'_>, draft: Draft) -> Result<Config, Error> {
    let Draft {
        mut spec,
        secrets,
        keys,
        control_socket,
        metrics_listen,
        control_group,
        allow_readable_password_file,
        realtime,
    } = draft;
    let read: Vec<(Vec<u8>, String)> = secrets
        .iter()
        .map(|s| read_secret(diag, s, allow_readable_password_file))
        .collect::<Result<_, _>>()?;
    let mut by_vhid: HashMap<VhidKey, Vec<u8>> = HashMap::with_capacity(keys.len());
    for k in keys {
        let Some((bytes, origin)) = read.get(k.secret) else {
            continue;
        };
        if k.ucarp
            && let Some(s) = secrets.get(k.secret)
        {
            ucarp_key(diag, s, &k.ctx, bytes, origin)?;
        }
        by_vhid.insert(k.vhid, bytes.clone());
    }
    for iface in &mut spec.interfaces {
        for v in &mut iface.vhids {
            let key = VhidKey {
                interface: iface.name.clone(),
                vhid: v.vhid,
            };
            v.key = by_vhid.remove(&key).unwrap_or_default();
        }
    }
    Ok(Config {
        spec,
        control_socket,
        metrics_listen,
        control_group: control_group.map(|g| lookup_group(diag, &g)).transpose()?,
        realtime,
    })
}

/// A password's bytes and a description of their origin for errors.
fn read_secret(
    diag: &Diagnostics<'_>,
    s: &Secret,
    allow_readable: bool,
) -> Result<(Vec<u8>, String), Error> {
    let at = diag.at(s.span.clone(), &s.ctx, s.key);
    match &s.source {
        SecretSource::Inline(bytes) => Ok((bytes.clone(), "the password".to_string())),
        SecretSource::File(path) => {
            let file =
                read_password_file(path).map_err(|e| at.err(format!("{}: {e}", path.display())))?;
            if !allow_readable && let Some(exposed) = exposure(file.mode) {
                return Err(at.err(format!(
                    "{} is mode {:04o}: {exposed}; run chmod 600 on it (in Kubernetes, \
                     give the Secret volume defaultMode: 0400) or set \
                     allow_readable_password_file = true",
                    path.display(),
                    file.mode
                )));
            }
            Ok((file.key, format!("the password in {}", path.display())))
        }
        // as bytes: the password is not necessarily UTF-8
        SecretSource::Env(name) => match std::env::var_os(name) {
            Some(v) => Ok((
                std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec(),
                format!("the password in ${name}"),
            )),
            None => Err(at.err(format!("the environment variable {name} is not set"))),
        },
    }
}

/// A key UCARP peers accept: not empty, at most [`UCARP_MAX_KEY`] bytes.
fn ucarp_key(
    diag: &Diagnostics<'_>,
    s: &Secret,
    ctx: &str,
    key: &[u8],
    origin: &str,
) -> Result<(), Error> {
    let at = diag.at(s.span.clone(), ctx, "password");
    if key.is_empty() {
        return Err(at.err(format!("{origin} is empty; UCARP peers need one")));
    }
    if key.len() > UCARP_MAX_KEY {
        return Err(at.err(format!(
            "{origin} is {} bytes; auth = \"ucarp\" allows at most {UCARP_MAX_KEY}",
            key.len()
        )));
    }
    Ok(())
}

/// `control_group`'s id from the group database.
fn lookup_group(diag: &Diagnostics<'_>, g: &At<String>) -> Result<ControlGroup, Error> {
    let at = diag.at(g.span.clone(), "", "control_group");
    let name = &g.value;
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(ControlGroup {
            name: name.clone(),
            gid: group.gid.as_raw(),
        }),
        Ok(None) => Err(at.err(format!("no group named {name:?} on this system"))),
        Err(e) => Err(at.err(format!("cannot look up group {name:?}: {e}"))),
    }
}

/// A password file's first line and its permission bits.
#[derive(Debug)]
pub struct PasswordFile {
    pub key: Vec<u8>,
    /// `st_mode & 0o7777` of the file read (after symlinks).
    pub mode: u32,
}

/// The first line of a password file, without its line ending (as UCARP's
/// `--passfile` reads it), and the mode of the file it came from.
pub fn read_password_file(path: &Path) -> std::io::Result<PasswordFile> {
    use std::io::{BufRead, Read};
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path)?;
    // The mode of the file actually read, not of whatever the path names
    // a moment later.
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    let mut line = Vec::new();
    std::io::BufReader::new(file)
        .take(MAX_PASSWORD_LINE + 1)
        .read_until(b'\n', &mut line)?;
    if line.strip_suffix(b"\n").unwrap_or(&line).len() as u64 > MAX_PASSWORD_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the first line is longer than {MAX_PASSWORD_LINE} bytes"),
        ));
    }
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(PasswordFile {
        key: line.to_vec(),
        mode,
    })
}

/// Who else a password file with permission bits `mode` is open to, if
/// anyone: any group or other bit counts (write access lets the password be
/// replaced).
pub fn exposure(mode: u32) -> Option<&'static str> {
    match (mode & 0o070 != 0, mode & 0o007 != 0) {
        (false, false) => None,
        (true, false) => Some("its group can access it"),
        (false, true) => Some("every user can access it"),
        (true, true) => Some("its group and every user can access it"),
    }
}
