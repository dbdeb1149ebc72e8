//! INT benchmarks: the simulated devices that load the node (shared by the
//! devnet and the harness), the throughput harness behind `int bench tps`, the GPU harness
//! behind `int bench gpu`,
//! and its reports and plots. The criterion benches live in `benches/`.

pub mod devices;
pub mod gpu;
pub mod tps;
