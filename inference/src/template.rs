//! Chat templates: the model's own Jinja template or a built-in one.
