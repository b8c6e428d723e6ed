//! Flag groups that several commands share: how many QUIC lanes a process opens, and the
//! instruction-set level of its look-up kernels. Kept apart from any one command, so that the
//! commands that flatten them (`bench`, `compare`, `limit`, and the cluster's processes) do not
//! import one another.

use clap::Args;

use embtune_worker::engine::kernels::Isa;

/// The instruction-set level of this process's look-up kernels.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct IsaArg {
    /// The highest instruction-set level the look-up kernels may use: scalar, avx2 or avx512
    /// (default: the best this CPU has; a level the CPU lacks is lowered to one it has). Lower
    /// it to measure what the vector kernels buy, or to compare machines at one level.
    /// Processes `embtune up` starts take it from EMBTUNE_ISA.
    #[arg(long, env = "EMBTUNE_ISA", value_name = "LEVEL")]
    pub isa: Option<Isa>,
}

/// How many QUIC connections this process opens to each peer it queries.
#[derive(Args, Debug, Clone, Copy)]
pub struct LanesArg {
    /// QUIC connections ("lanes") this process opens to each worker, and to the coordinator
    /// for queries it relays. One connection's encryption runs on one core, so a large reply is
    /// fetched as stripes of whole samples, one per lane, in parallel; 1 turns striping off,
    /// for comparisons. Processes `embtune up` starts take it from EMBTUNE_LANES.
    #[arg(long, env = "EMBTUNE_LANES", value_name = "N", value_parser = parse_lanes,
          default_value_t = embtune_transport::lanes::DEFAULT_LANES)]
    pub lanes: usize,
}

/// A lane count: a whole number of at least one.
fn parse_lanes(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a lane count: give a whole number of at least 1")),
    }
}
