//! What a column holds, in words every store shares. Each store's catalog reader maps its own
//! types onto [`ColumnType`]; the schema gate, the planner, erasure's policy check and
//! `discover` reason in these, never in a store's type names (which are kept for messages).

/// The kind of value a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Bool,
    /// Signed integers (and MySQL's unsigned ones up to `INT UNSIGNED`).
    Integer,
    /// Exact numbers: `numeric`, `DECIMAL`, and MySQL's `BIGINT UNSIGNED`.
    Decimal,
    Float,
    /// Character strings: `text`, `varchar`, `char`, `citext`, MySQL's `TEXT`s.
    Text,
    Bytes,
    Date,
    /// A time of day, or MySQL's `TIME` (a duration).
    Time,
    /// A date and time without a zone (PostgreSQL's `timestamp`, MySQL's `DATETIME`): a wall
    /// clock, read in the source's zone.
    LocalTimestamp,
    /// An instant (PostgreSQL's `timestamptz`, MySQL's `TIMESTAMP`).
    Timestamp,
    /// MySQL's `YEAR`.
    Year,
    Interval,
    Json,
    Array,
    /// One label of a declared list (an enum type, MySQL's `ENUM`).
    Enum,
    /// Several labels of a declared list (MySQL's `SET`).
    Set,
    /// A string of bits (`bit`, `varbit`, MySQL's `BIT`).
    Bit,
    /// A network address (`inet`, `cidr`, MariaDB's `INET4`, `INET6`).
    Network,
    Uuid,
    /// Anything else (geometry, ranges, xml, a user-defined type).
    Other,
}

impl ColumnType {
    /// Numbers of any kind, which compare with each other.
    pub fn is_number(self) -> bool {
        matches!(
            self,
            ColumnType::Integer | ColumnType::Decimal | ColumnType::Float
        )
    }

    /// Dates and times, which compare with each other.
    pub fn is_temporal(self) -> bool {
        matches!(
            self,
            ColumnType::Date
                | ColumnType::Time
                | ColumnType::LocalTimestamp
                | ColumnType::Timestamp
        )
    }

    /// Whether a reference from a column of this type to one of `other` compares values of
    /// one kind: both numbers, both dates and times, or the same type (for `Other`, the
    /// gate also asks for the same store type). A store whose SQL compares more kinds says
    /// so in its dialect.
    pub fn compares_with(self, other: ColumnType) -> bool {
        self == other
            || (self.is_number() && other.is_number())
            || (self.is_temporal() && other.is_temporal())
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnType::*;

    #[test]
    fn references_compare_numbers_with_numbers_and_times_with_times() {
        assert!(Integer.compares_with(Decimal));
        assert!(Date.compares_with(Timestamp));
        assert!(Text.compares_with(Text));
        assert!(!Text.compares_with(Integer));
        assert!(!Uuid.compares_with(Bytes));
        assert!(!Enum.compares_with(Text));
    }
}
