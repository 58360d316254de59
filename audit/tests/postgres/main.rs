//! Tests against a real PostgreSQL (`DATABASE_URL`, default
//! postgres://postgres@127.0.0.1:5432); each test makes and drops its own database.

mod support;

mod keys;
mod privileges;
mod queries;
mod retention;
mod store;
mod tamper;
mod writer;
