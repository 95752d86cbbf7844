//! Attributes in both of KMIP's spellings. KMIP 1.x carries each as a name/value pair
//! (`Attribute { Attribute Name, Attribute Index, Attribute Value }`, inside a
//! Template-Attribute); KMIP 2.0 carries each under its own tag inside an `Attributes`
//! structure. Both read into one `Attribute` (the 1.x name, an index, the value), so the
//! server has one set of rules, and each is written back in the spelling of the request's
//! version.
//!
//! Custom attributes (`x-…` from clients, `y-…` from servers) exist only in 1.x's spelling: a
//! 2.0 response leaves them out, since 2.0 clients such as PyKMIP refuse an attribute tag they
//! do not know.

use crate::enums::ResultReason;
use crate::message::{Failure, ProtocolVersion};
use crate::tag::{self, Tag};
use crate::ttlv::{Item, ItemType, Value};

/// Attributes one request may carry; past it the request is refused (Tape Library profile:
/// a server takes at least 30 vendor attributes per object).
pub const ATTRIBUTES_PER_REQUEST_MAX: usize = 64;

/// Attribute names (custom ones included) and text values are bounded like any stored text.
pub const ATTRIBUTE_NAME_LEN_MAX: usize = 128;
pub const ATTRIBUTE_TEXT_LEN_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// The 1.x name: "Cryptographic Algorithm", "x-Barcode".
    pub name: String,
    pub index: u32,
    /// The value; a structure's children keep their own tags (Name Value, Name Type).
    pub value: Value,
}

/// A standard attribute: its 1.x name, its 2.0 tag, the type of its value, and the first
/// version that has it.
#[derive(Clone, Copy, Debug)]
pub struct Known {
    pub name: &'static str,
    pub tag: Tag,
    pub item_type: ItemType,
    pub since: ProtocolVersion,
}

const fn known(name: &'static str, tag: Tag, item_type: ItemType, since: ProtocolVersion) -> Known {
    Known { name, tag, item_type, since }
}

const V1_0: ProtocolVersion = ProtocolVersion::V1_0;

/// The standard attributes this server reads or reports.
pub const KNOWN: &[Known] = &[
    known("Unique Identifier", tag::UNIQUE_IDENTIFIER, ItemType::TextString, V1_0),
    known("Name", tag::NAME, ItemType::Structure, V1_0),
    known("Object Type", tag::OBJECT_TYPE, ItemType::Enumeration, V1_0),
    known("Cryptographic Algorithm", tag::CRYPTOGRAPHIC_ALGORITHM, ItemType::Enumeration, V1_0),
    known("Cryptographic Length", tag::CRYPTOGRAPHIC_LENGTH, ItemType::Integer, V1_0),
    known("Cryptographic Usage Mask", tag::CRYPTOGRAPHIC_USAGE_MASK, ItemType::Integer, V1_0),
    known("Operation Policy Name", tag::OPERATION_POLICY_NAME, ItemType::TextString, V1_0),
    known("Lease Time", tag::LEASE_TIME, ItemType::Interval, V1_0),
    known("State", tag::STATE, ItemType::Enumeration, V1_0),
    known("Initial Date", tag::INITIAL_DATE, ItemType::DateTime, V1_0),
    known("Activation Date", tag::ACTIVATION_DATE, ItemType::DateTime, V1_0),
    known("Process Start Date", tag::PROCESS_START_DATE, ItemType::DateTime, V1_0),
    known("Protect Stop Date", tag::PROTECT_STOP_DATE, ItemType::DateTime, V1_0),
    known("Deactivation Date", tag::DEACTIVATION_DATE, ItemType::DateTime, V1_0),
    known("Destroy Date", tag::DESTROY_DATE, ItemType::DateTime, V1_0),
    known("Compromise Occurrence Date", tag::COMPROMISE_OCCURRENCE_DATE, ItemType::DateTime, V1_0),
    known("Compromise Date", tag::COMPROMISE_DATE, ItemType::DateTime, V1_0),
    known("Revocation Reason", tag::REVOCATION_REASON, ItemType::Structure, V1_0),
    known("Object Group", tag::OBJECT_GROUP, ItemType::TextString, V1_0),
    known(
        "Application Specific Information",
        tag::APPLICATION_SPECIFIC_INFORMATION,
        ItemType::Structure,
        V1_0,
    ),
    known("Contact Information", tag::CONTACT_INFORMATION, ItemType::TextString, V1_0),
    known("Last Change Date", tag::LAST_CHANGE_DATE, ItemType::DateTime, V1_0),
    known("Fresh", tag::FRESH, ItemType::Boolean, ProtocolVersion::V1_1),
    known("Alternative Name", tag::ALTERNATIVE_NAME, ItemType::Structure, ProtocolVersion::V1_2),
    known(
        "Original Creation Date",
        tag::ORIGINAL_CREATION_DATE,
        ItemType::DateTime,
        ProtocolVersion::V1_2,
    ),
    known("Sensitive", tag::SENSITIVE, ItemType::Boolean, ProtocolVersion::V1_4),
    known("Extractable", tag::EXTRACTABLE, ItemType::Boolean, ProtocolVersion::V1_4),
];

pub fn known_by_name(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name == name)
}

pub fn known_by_tag(tag: Tag) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.tag == tag)
}

/// `x-` from a client, `y-` from a server (KMIP 1.x "Custom Attribute").
pub fn is_custom(name: &str) -> bool {
    name.starts_with("x-") || name.starts_with("y-")
}

fn invalid_field(message: impl Into<String>) -> Failure {
    Failure::new(ResultReason::INVALID_FIELD, message)
}

impl Attribute {
    pub fn new(name: &str, value: Value) -> Attribute {
        Attribute { name: name.to_owned(), index: 0, value }
    }

    /// Reads a 1.x `Attribute` structure, or (with `is_2x`) one attribute under its own tag.
    pub fn from_item(item: &Item, is_2x: bool) -> Result<Attribute, Failure> {
        let attribute = if is_2x { from_tagged(item)? } else { from_pair(item)? };
        attribute.check()?;
        Ok(attribute)
    }

    /// Checks the value's type against the attribute's, and bounds names and text.
    fn check(&self) -> Result<(), Failure> {
        if self.name.is_empty() || self.name.len() > ATTRIBUTE_NAME_LEN_MAX {
            return Err(invalid_field(format!(
                "an attribute name must be 1 to {ATTRIBUTE_NAME_LEN_MAX} bytes"
            )));
        }
        let texts_ok = match &self.value {
            Value::TextString(text) => text.len() <= ATTRIBUTE_TEXT_LEN_MAX,
            Value::Structure(children) => children.iter().all(|c| match &c.value {
                Value::TextString(text) => text.len() <= ATTRIBUTE_TEXT_LEN_MAX,
                _ => true,
            }),
            _ => true,
        };
        if !texts_ok {
            return Err(invalid_field(format!(
                "attribute {}: text longer than {ATTRIBUTE_TEXT_LEN_MAX} bytes",
                self.name
            )));
        }
        if let Some(known) = known_by_name(&self.name) {
            if self.value.item_type() != known.item_type {
                return Err(invalid_field(format!(
                    "attribute {} must be of type {:?}, not {:?}",
                    self.name,
                    known.item_type,
                    self.value.item_type()
                )));
            }
        } else if is_custom(&self.name) {
            if !matches!(self.value, Value::TextString(_) | Value::Integer(_) | Value::DateTime(_))
            {
                return Err(invalid_field(format!(
                    "custom attribute {} must be a Text String, an Integer or a Date-Time",
                    self.name
                )));
            }
        } else {
            return Err(Failure::new(
                ResultReason::INVALID_FIELD,
                format!(
                    "attribute {:?} is not one this server knows; custom ones start with x-",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    /// The 1.x spelling.
    pub fn to_pair(&self) -> Item {
        let mut fields = vec![Item::text(tag::ATTRIBUTE_NAME, self.name.clone())];
        if self.index > 0 {
            fields.push(Item::integer(
                tag::ATTRIBUTE_INDEX,
                i32::try_from(self.index).unwrap_or(i32::MAX),
            ));
        }
        fields.push(Item::new(tag::ATTRIBUTE_VALUE, self.value.clone()));
        Item::structure(tag::ATTRIBUTE, fields)
    }

    /// The 2.0 spelling, or `None` for an attribute 2.0 has no tag for (custom ones).
    pub fn to_tagged(&self) -> Option<Item> {
        known_by_name(&self.name).map(|known| Item::new(known.tag, self.value.clone()))
    }

    /// Written in `version`'s spelling, or `None` when that version lacks the attribute.
    pub fn to_item(&self, version: ProtocolVersion) -> Option<Item> {
        if let Some(known) = known_by_name(&self.name) {
            if version < known.since {
                return None;
            }
        }
        if version.is_2x() {
            self.to_tagged()
        } else {
            Some(self.to_pair())
        }
    }

    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(text) => Some(text),
            _ => None,
        }
    }

    /// A text field of a structured value (Name Value, Application Data).
    pub fn field_text(&self, field: Tag) -> Option<&str> {
        match &self.value {
            Value::Structure(children) => {
                children.iter().find(|c| c.tag == field).and_then(|c| match &c.value {
                    Value::TextString(text) => Some(text.as_str()),
                    _ => None,
                })
            }
            _ => None,
        }
    }
}

fn from_pair(item: &Item) -> Result<Attribute, Failure> {
    if item.tag != tag::ATTRIBUTE {
        return Err(invalid_field(format!("expected an Attribute, found {:?}", item.tag)));
    }
    let name = match item.child(tag::ATTRIBUTE_NAME).map(|n| &n.value) {
        Some(Value::TextString(name)) => name.clone(),
        _ => return Err(invalid_field("an Attribute has no Attribute Name")),
    };
    let index = match item.child(tag::ATTRIBUTE_INDEX).map(|i| &i.value) {
        None => 0,
        Some(Value::Integer(i)) if *i >= 0 => i.unsigned_abs(),
        Some(_) => return Err(invalid_field(format!("attribute {name}: bad Attribute Index"))),
    };
    let value = item.child(tag::ATTRIBUTE_VALUE).map(|v| v.value.clone()).ok_or_else(|| {
        Failure::new(ResultReason::MISSING_DATA, format!("attribute {name} has no value"))
    })?;
    Ok(Attribute { name, index, value })
}

fn from_tagged(item: &Item) -> Result<Attribute, Failure> {
    let known = known_by_tag(item.tag).ok_or_else(|| {
        invalid_field(format!("{:?} is not an attribute this server takes over KMIP 2.0", item.tag))
    })?;
    Ok(Attribute::new(known.name, item.value.clone()))
}

/// The attributes a Create, Register or Locate payload carries: a 1.x Template-Attribute
/// (attributes only: named templates are refused) or bare Attribute items, or a 2.0
/// Attributes structure.
pub fn payload_attributes(
    payload: &Item,
    version: ProtocolVersion,
) -> Result<Vec<Attribute>, Failure> {
    let mut items: Vec<&Item> = Vec::new();
    if version.is_2x() {
        for attributes in payload.children_tagged(tag::ATTRIBUTES) {
            items.extend(attributes.children());
        }
    } else {
        for template in payload.children_tagged(tag::TEMPLATE_ATTRIBUTE) {
            if template.child(tag::NAME).is_some() {
                return Err(Failure::new(
                    ResultReason::FEATURE_NOT_SUPPORTED,
                    "named templates are not kept here; send the attributes themselves",
                ));
            }
            items.extend(template.children_tagged(tag::ATTRIBUTE));
        }
        items.extend(payload.children_tagged(tag::ATTRIBUTE));
    }
    if items.len() > ATTRIBUTES_PER_REQUEST_MAX {
        return Err(invalid_field(format!(
            "{} attributes in one request; at most {ATTRIBUTES_PER_REQUEST_MAX}",
            items.len()
        )));
    }
    items.into_iter().map(|item| Attribute::from_item(item, version.is_2x())).collect()
}

/// An attribute list for a response: a 2.0 `Attributes` structure, or 1.x Attribute items.
pub fn response_attributes(attributes: &[Attribute], version: ProtocolVersion) -> Vec<Item> {
    let items: Vec<Item> = attributes.iter().filter_map(|a| a.to_item(version)).collect();
    if version.is_2x() {
        vec![Item::structure(tag::ATTRIBUTES, items)]
    } else {
        items
    }
}

/// A Name or Alternative Name value: `{ value_tag: text, type_tag: enumeration }`.
pub fn name_value(value_tag: Tag, type_tag: Tag, text: &str, name_type: u32) -> Value {
    Value::Structure(vec![Item::text(value_tag, text), Item::enumeration(type_tag, name_type)])
}
