//! Values: what a row's cells become on the wire. [`decode`] turns PostgreSQL wire values
//! into the proto's typed values; [`coerce`] applies the coercion matrix (time zones, epochs,
//! legacy date strings). Pure functions, property-tested; no I/O, and no import of any other
//! room but the generated protobuf types.

pub mod coerce;
pub mod decode;

pub use coerce::*;
pub use decode::*;
