//! The Google Cloud Marketplace simulator.
