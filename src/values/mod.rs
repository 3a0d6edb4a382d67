//! Values: what a row's cells become on the wire. [`coerce`] decodes PostgreSQL wire values
//! into the proto's typed values and applies the coercion matrix (time zones, epochs, legacy
//! date strings). Pure functions, property-tested; no I/O.

pub mod coerce;
