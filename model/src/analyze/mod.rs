//! `istioctl analyze` equivalents. PLACEHOLDER.
