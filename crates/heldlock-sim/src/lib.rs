//! Deterministic simulation of the heldlock protocol: a simulated clock, a
//! simulated POSIX file system and a seeded scheduler that runs the real
//! protocol code under crashes, pauses and I/O errors. (Arrives with the
//! simulation work.)
#![warn(missing_docs)]
