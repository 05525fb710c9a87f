//! End-to-end tests: each test starts the real server on 127.0.0.1:0 with a fresh data
//! directory and talks to it over HTTP.

mod common;
mod smoke;
