//! directfile's drivers as bench backends (wired once the library lands on main).

use std::path::Path;

use crate::bench::stats::Measurement;
use crate::bench::workload::Workload;
use crate::bench::Backend;
use crate::error::{cli_error, CliResult};

pub fn run(backend: Backend, _path: &Path, _workload: &Workload) -> CliResult<Measurement> {
    Err(cli_error!("backend {backend:?}: the directfile library is not wired yet"))
}

pub fn auto_choice() -> CliResult<(String, String)> {
    Err(cli_error!("the directfile library is not wired yet"))
}
