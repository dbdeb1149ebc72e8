//! INT's criterion benches, in `benches/`: BLS verification, the state
//! tree, execution of a block, the storage commit, Groth16 batches and the
//! GPU kernels. The throughput harnesses behind `int bench` are in
//! `int-node` (`int_node::bench`), so they time the node's own paths.
