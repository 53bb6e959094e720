//! Runnable apps built from the registry's functions; see `examples/*.rs` and README "Use it as a library".
