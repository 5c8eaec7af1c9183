//! Tessera's integration tests (one binary): router-level HTTP tests, real `sync-node`
//! processes on loopback, and crash tests.

mod access;
mod albums;
mod crash;
mod e2e;
mod gpu_search;
mod household;
mod http;
mod immich_cli;
mod immich_sdk;
mod library;
mod ml;
mod multipart;
mod node;
mod objects;
mod p2p;
mod search;
mod sharing;
mod webhooks;
