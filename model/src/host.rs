//! Host name semantics (wildcards, short names). PLACEHOLDER.
