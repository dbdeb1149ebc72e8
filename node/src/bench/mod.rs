//! The harnesses behind `int bench`: throughput (`tps`), the state at
//! growing populations (`scale`), the MQTT gateway
//! under load (`mqtt`) and the GPU kernels beside their CPU references
//! (`gpu`). They write reports and plots; the criterion benches live in the
//! `int-bench` crate.

pub mod gpu;
pub mod mqtt;
pub mod scale;
pub mod tps;
