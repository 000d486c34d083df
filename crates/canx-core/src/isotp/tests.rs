//! Unit tests: codec, addressing, timers, Table 23.
