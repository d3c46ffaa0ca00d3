//! Where the shipped files are: next to the working directory when run from
//! a checkout, or in the source tree this binary was built from.

use std::path::PathBuf;

/// The shipped playbooks directory.
pub fn playbooks() -> PathBuf {
    crate::existing(PathBuf::from("playbooks"))
}

/// The shipped scenarios directory.
pub fn scenarios() -> PathBuf {
    crate::existing(PathBuf::from("sim/scenarios"))
}
