//! Policy documents: loading, validation, merge and reload.
