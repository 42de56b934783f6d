//! The marketplace reporters billing runs with, chosen from configuration.
