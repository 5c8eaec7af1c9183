//! Tessera's integration tests (one binary): router-level HTTP tests, real `sync-node`
//! processes on loopback, and crash tests.

mod crash;
mod http;
mod node;
