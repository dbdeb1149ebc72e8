//! BLS min_sig (see mod.rs).
