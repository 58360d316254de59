//! Llama Guard prompt building, verdict parsing and classifier backends.
