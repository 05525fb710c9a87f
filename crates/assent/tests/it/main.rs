//! End-to-end tests: each test starts the real server on 127.0.0.1:0 with a fresh data
//! directory and talks to it over HTTP.

mod auth;
mod batches;
mod cli;
mod common;
mod concurrency;
mod connectors;
mod consistency;
mod crash;
mod errors;
mod event_routes;
mod events;
mod export;
mod exports;
mod filters;
mod import;
mod integrations;
mod isolation;
mod limits;
mod logs;

mod multinode;
mod notice;
mod ops;
mod pg_cli;
mod pg_rows;
mod process;
mod purposes;
mod ratelimits;
mod resolution;
mod sessions;
mod smoke;
mod status;
mod tcf;
mod trust;
mod users;
mod web;
