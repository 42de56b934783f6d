//! The names of a resource's database and roles, and how they are written
//! into SQL.
//!
//! Names come only from the resource id (checked to be `res_` and 32 hex
//! digits) and the catalog's prefix (checked to be lowercase letters, digits
//! and underscores); customer input (resource names, metadata) never becomes
//! an identifier. Every identifier and literal is still quoted, so the SQL
//! stays correct whatever reaches it.

use marketbridge_core::ids::ResourceId;
use marketbridge_core::{Error, Result};

/// Longest identifier PostgreSQL keeps (longer ones are silently cut).
const MAX_IDENTIFIER_BYTES: usize = 63;
/// Longest name prefix a catalog may set.
pub const MAX_PREFIX_BYTES: usize = 20;

/// Quotes an identifier: wrapped in double quotes, with embedded double
/// quotes doubled. Refuses NUL characters and names PostgreSQL would cut.
pub fn quote_identifier(name: &str) -> Result<String> {
    if name.is_empty() || name.contains('\0') || name.len() > MAX_IDENTIFIER_BYTES {
        return Err(Error::internal(format!(
            "`{}` cannot be a PostgreSQL identifier",
            name.escape_debug()
        )));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Quotes a string literal as an escape string (`E'...'`), doubling
/// backslashes and single quotes, so its meaning does not depend on the
/// server's `standard_conforming_strings`. Refuses NUL characters.
pub fn quote_literal(text: &str) -> Result<String> {
    if text.contains('\0') {
        return Err(Error::validation(
            "text with NUL characters cannot be stored in PostgreSQL",
        ));
    }
    Ok(format!(
        "E'{}'",
        text.replace('\\', "\\\\").replace('\'', "''")
    ))
}

/// Checks a catalog name prefix: 1 to 20 lowercase letters, digits and
/// underscores, starting with a letter or underscore.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let mut bytes = prefix.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !first_ok || !rest_ok || prefix.len() > MAX_PREFIX_BYTES {
        return Err(Error::validation(format!(
            "postgres name_prefix `{}` must be 1 to {MAX_PREFIX_BYTES} lowercase letters, digits or underscores, starting with a letter or underscore",
            prefix.escape_debug()
        )));
    }
    Ok(())
}

/// One of the two login roles of a resource. Two exist so that a rotation
/// can issue a new password while the old one keeps working: the customer
/// uses one slot, a rotation moves them to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The first login role (`…_a`).
    A,
    /// The second login role (`…_b`).
    B,
}

impl Slot {
    /// The slot a rotation moves to.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The slot's letter, as kept in the driver's notes.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// Reads the letter back; anything else is the first slot.
    pub fn parse(text: &str) -> Slot {
        if text == "b" { Slot::B } else { Slot::A }
    }
}

/// The database and roles of one resource (see "postgres driver role
/// layout" in ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    /// The resource id, the only tenant metadata kept in the cluster.
    pub resource_id: String,
    /// The database (owned by the admin role); also the name of the owner
    /// role.
    pub database: String,
    /// The role owning everything the customer creates (cannot log in).
    pub owner: String,
    /// The role whose privileges the logins have over the storage quota:
    /// reading, nothing else (cannot log in).
    pub reader: String,
    /// The two login roles, members of the owner role (or, over the quota,
    /// of the reader role).
    pub logins: [String; 2],
}

impl ResourceNames {
    /// The names for `id` under `prefix`.
    pub fn new(prefix: &str, id: &ResourceId) -> Result<Self> {
        check_prefix(prefix)?;
        let database = format!("{prefix}{id}");
        let names = Self {
            resource_id: id.to_string(),
            owner: database.clone(),
            reader: format!("{database}_r"),
            logins: [format!("{database}_a"), format!("{database}_b")],
            database,
        };
        // Every name is checked once here, so later quoting cannot fail.
        for name in names.all() {
            quote_identifier(name)?;
        }
        Ok(names)
    }

    /// The login role of `slot`.
    pub fn login(&self, slot: Slot) -> &str {
        match slot {
            Slot::A => &self.logins[0],
            Slot::B => &self.logins[1],
        }
    }

    /// The slot whose login role is `user`, if any.
    pub fn slot_of(&self, user: &str) -> Option<Slot> {
        [Slot::A, Slot::B]
            .into_iter()
            .find(|slot| self.login(*slot) == user)
    }

    /// Every role and database name.
    pub fn all(&self) -> [&str; 4] {
        [&self.owner, &self.reader, &self.logins[0], &self.logins[1]]
    }

    /// The names of a database `name` under `prefix`, when it is one this
    /// driver made (`<prefix>res_<32 hex digits>`).
    pub fn of_database(prefix: &str, name: &str) -> Option<Self> {
        let id = ResourceId::parse("resource_id", name.strip_prefix(prefix)?).ok()?;
        Self::new(prefix, &id).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_identifier("plain").unwrap(), "\"plain\"");
        assert_eq!(
            quote_identifier("a\"; DROP ROLE x; --").unwrap(),
            "\"a\"\"; DROP ROLE x; --\""
        );
        assert!(quote_identifier("").is_err());
        assert!(quote_identifier("nul\0").is_err());
        assert!(quote_identifier(&"x".repeat(64)).is_err());
        assert_eq!(quote_literal("it's").unwrap(), "E'it''s'");
        assert_eq!(quote_literal("back\\'slash").unwrap(), "E'back\\\\''slash'");
        assert!(quote_literal("nul\0").is_err());
    }

    #[test]
    fn names_come_from_the_resource_id_only() {
        let id = "res_0190b2c3d4e5f60718293a4b5c6d7e8f";
        let resource = ResourceId::parse("resource_id", id).unwrap();
        let names = ResourceNames::new("mb_", &resource).unwrap();
        assert_eq!(names.database, format!("mb_{id}"));
        assert_eq!(names.owner, names.database);
        assert_eq!(names.reader, format!("mb_{id}_r"));
        assert_eq!(names.resource_id, id);
        assert_eq!(
            ResourceNames::of_database("mb_", &names.database),
            Some(names.clone())
        );
        assert_eq!(ResourceNames::of_database("mb_", "mb_other"), None);
        assert_eq!(ResourceNames::of_database("xx_", &names.database), None);
        assert_eq!(names.login(Slot::A), format!("mb_{id}_a"));
        assert_eq!(names.login(Slot::B), format!("mb_{id}_b"));
        assert_eq!(names.slot_of(&format!("mb_{id}_b")), Some(Slot::B));
        assert_eq!(names.slot_of("postgres"), None);
        for hostile in [
            "res_x\"; DROP DATABASE postgres; --",
            "res_0190B2C3D4E5F60718293A4B5C6D7E8F",
            "",
        ] {
            assert!(
                ResourceId::parse("resource_id", hostile).is_err(),
                "{hostile}"
            );
        }
        for prefix in ["", "MB_", "mb-", "1mb", "mb\"", &"a".repeat(21)] {
            assert!(ResourceNames::new(prefix, &resource).is_err(), "{prefix}");
        }
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::parse(Slot::B.as_str()), Slot::B);
        assert_eq!(Slot::parse("anything"), Slot::A);
    }
}
