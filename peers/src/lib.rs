//! Side-by-side benchmarks of odesens against peer libraries: `cargo bench -p odesens-peers --bench peers`
//! (see `benches/peers.rs`). This crate has no library code; it exists so that the peers' dependencies
//! (diffsol) stay out of the published crates.
