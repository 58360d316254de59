//! Policy documents: loading, validation, merge and reload.

pub mod taxonomy;
