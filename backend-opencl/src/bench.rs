//! Benchmark routines (placeholder).
