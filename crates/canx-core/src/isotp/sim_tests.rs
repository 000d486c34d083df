//! Deterministic simulations (virtual clock, seeded loss and reordering).
