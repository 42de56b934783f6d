//! The Vercel Marketplace simulator.
