//! Smelter: a medallion ETL dataflow engine on Apache DataFusion and Delta Lake.
//!
//! Data flows extract → bronze → silver → gold. The [`plan`] is loaded and validated before any
//! connection opens; [`layers`] run it in a DataFusion session from [`engine`] against the lake of
//! [`storage`], writing through a [`table`] format and recording runs in [`state`].

pub mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod error;
pub mod extract;
pub mod interrupt;
pub mod layers;
pub mod lineage;
pub mod plan;
pub mod profile;
pub mod quality;
pub mod quarantine;
pub mod schema;
pub mod state;
pub mod storage;
pub mod table;

pub use error::{Error, Result};
