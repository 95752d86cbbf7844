//! Between KMIP's attributes (the `kmip` crate's `Attribute`) and what the state keeps: the
//! client-settable ones become `statemachine::kmip::KmipAttribute`s; the ones the cluster
//! knows (state, dates, algorithm) are computed from the key on every read.

use kmip::attribute::{self as attr, Attribute};
use kmip::enums::{CryptographicAlgorithm, ObjectType, ResultReason, UsageMask};
use kmip::message::{Failure, ProtocolVersion};
use kmip::tag;
use kmip::Value;
use statemachine::key::Key;
use statemachine::kmip::{KmipAttribute, KmipObject, KmipValue, KMIP_SETTABLE};
use statemachine::State;

/// The usage mask of a key whose client named none, and of a drive's key: Encrypt and Decrypt.
const USAGE_MASK_DEFAULT: u32 = UsageMask::ENCRYPT.0 | UsageMask::DECRYPT.0;

/// What a Create or Register carries, sorted: the usage mask, and what the state keeps.
#[derive(Debug, Default)]
pub(crate) struct ClientAttributes {
    pub usage_mask: u32,
    pub kept: Vec<KmipAttribute>,
}

/// Reads the attributes of a Create or Register: AES-256 only, the usage mask apart, the
/// settable ones kept, any other one refused as read-only.
pub(crate) fn from_client(
    attributes: &[Attribute],
    version: ProtocolVersion,
) -> Result<ClientAttributes, Failure> {
    let mut sorted = ClientAttributes { usage_mask: USAGE_MASK_DEFAULT, kept: Vec::new() };
    for attribute in attributes {
        match (attribute.name.as_str(), &attribute.value) {
            ("Cryptographic Algorithm", Value::Enumeration(algorithm)) => {
                if CryptographicAlgorithm(*algorithm) != CryptographicAlgorithm::AES {
                    return Err(Failure::new(
                        invalid_value(version),
                        "only AES keys are made here (Cryptographic Algorithm 3)",
                    ));
                }
            }
            ("Cryptographic Length", Value::Integer(length)) => {
                if *length != 256 {
                    return Err(Failure::new(
                        invalid_value(version),
                        "only 256-bit keys are made here",
                    ));
                }
            }
            ("Cryptographic Usage Mask", Value::Integer(mask)) => sorted.usage_mask = *mask as u32,
            ("Object Type", Value::Enumeration(object_type)) => {
                if ObjectType(*object_type) != ObjectType::SYMMETRIC_KEY {
                    return Err(Failure::new(
                        ResultReason::INVALID_FIELD,
                        "only Symmetric Keys are kept here",
                    ));
                }
            }
            _ => sorted.kept.push(to_kept(attribute, version)?),
        }
    }
    Ok(sorted)
}

fn invalid_value(version: ProtocolVersion) -> ResultReason {
    if version.is_2x() {
        ResultReason::INVALID_ATTRIBUTE_VALUE
    } else {
        ResultReason::INVALID_FIELD
    }
}

fn read_only(name: &str, version: ProtocolVersion) -> Failure {
    let reason = if version.is_2x() {
        ResultReason::READ_ONLY_ATTRIBUTE
    } else {
        ResultReason::INVALID_FIELD
    };
    Failure::new(reason, format!("attribute {name} is set by the server, not by a client"))
}

/// A settable attribute as the state keeps it.
pub(crate) fn to_kept(
    attribute: &Attribute,
    version: ProtocolVersion,
) -> Result<KmipAttribute, Failure> {
    let name = attribute.name.as_str();
    if !KMIP_SETTABLE.contains(&name) && !attr::is_custom(name) {
        return Err(read_only(name, version));
    }
    let value = match (name, &attribute.value) {
        ("Name", _) => KmipValue::Name {
            value: field(attribute, tag::NAME_VALUE)?,
            name_type: enumeration(attribute, tag::NAME_TYPE).unwrap_or(1),
        },
        ("Alternative Name", _) => KmipValue::Name {
            value: field(attribute, tag::ALTERNATIVE_NAME_VALUE)?,
            name_type: enumeration(attribute, tag::ALTERNATIVE_NAME_TYPE).unwrap_or(1),
        },
        ("Application Specific Information", _) => KmipValue::ApplicationInfo {
            namespace: field(attribute, tag::APPLICATION_NAMESPACE)?,
            data: field(attribute, tag::APPLICATION_DATA)?,
        },
        (_, Value::TextString(text)) => KmipValue::Text(text.clone()),
        (_, Value::Integer(number)) => KmipValue::Integer(*number),
        (_, Value::DateTime(seconds)) => KmipValue::DateTime(*seconds),
        _ => {
            return Err(Failure::new(
                ResultReason::INVALID_FIELD,
                format!("attribute {name}: a value of that type is not kept here"),
            ))
        }
    };
    Ok(KmipAttribute { name: attribute.name.clone(), value })
}

fn field(attribute: &Attribute, field: kmip::Tag) -> Result<String, Failure> {
    attribute.field_text(field).map(str::to_owned).ok_or_else(|| {
        Failure::new(
            ResultReason::MISSING_DATA,
            format!("attribute {} lacks {field:?}", attribute.name),
        )
    })
}

fn enumeration(attribute: &Attribute, field: kmip::Tag) -> Option<u32> {
    match &attribute.value {
        Value::Structure(children) => {
            children.iter().find(|c| c.tag == field).and_then(|c| match c.value {
                Value::Enumeration(value) => Some(value),
                _ => None,
            })
        }
        _ => None,
    }
}

/// A kept attribute as KMIP writes it.
pub(crate) fn from_kept(kept: &KmipAttribute) -> Attribute {
    let value = match &kept.value {
        KmipValue::Text(text) => Value::TextString(text.clone()),
        KmipValue::Integer(number) => Value::Integer(*number),
        KmipValue::DateTime(seconds) => Value::DateTime(*seconds),
        KmipValue::Name { value, name_type } if kept.name == "Alternative Name" => {
            attr::name_value(
                tag::ALTERNATIVE_NAME_VALUE,
                tag::ALTERNATIVE_NAME_TYPE,
                value,
                *name_type,
            )
        }
        KmipValue::Name { value, name_type } => {
            attr::name_value(tag::NAME_VALUE, tag::NAME_TYPE, value, *name_type)
        }
        KmipValue::ApplicationInfo { namespace, data } => Value::Structure(vec![
            kmip::Item::text(tag::APPLICATION_NAMESPACE, namespace.clone()),
            kmip::Item::text(tag::APPLICATION_DATA, data.clone()),
        ]),
    };
    Attribute::new(&kept.name, value)
}

fn seconds(ms: u64) -> Value {
    Value::DateTime(i64::try_from(ms / 1000).unwrap_or(i64::MAX))
}

/// Every attribute of `key` as KMIP reports it: the cluster's view (identifier, type,
/// algorithm, state, dates), then what the client set, with each name's instances indexed.
pub(crate) fn of_key(
    state: &State,
    key: &Key,
    object: Option<&KmipObject>,
    now_ms: u64,
) -> Vec<Attribute> {
    let kmip_state = state.kmip_state_at(key, now_ms);
    let mut all = vec![
        Attribute::new("Unique Identifier", Value::TextString(key.id.to_string())),
        Attribute::new("Object Type", Value::Enumeration(ObjectType::SYMMETRIC_KEY.0)),
        Attribute::new(
            "Cryptographic Algorithm",
            Value::Enumeration(CryptographicAlgorithm::AES.0),
        ),
        Attribute::new("Cryptographic Length", Value::Integer(256)),
        Attribute::new(
            "Cryptographic Usage Mask",
            Value::Integer(object.map_or(USAGE_MASK_DEFAULT, |o| o.usage_mask) as i32),
        ),
        Attribute::new("State", Value::Enumeration(kmip_state as u32)),
        Attribute::new("Initial Date", seconds(key.created_at_ms)),
        Attribute::new("Original Creation Date", seconds(key.created_at_ms)),
        Attribute::new("Fresh", Value::Boolean(false)),
    ];
    let activated = match object {
        Some(object) => object.activated_at_ms,
        None => key.activation.map(|a| a.activated_at_ms),
    };
    if let Some(at_ms) = activated {
        all.push(Attribute::new("Activation Date", seconds(at_ms)));
    }
    if let Some(activation) = key.activation {
        all.push(Attribute::new("Protect Stop Date", seconds(activation.encryption_ends_at_ms)));
        all.push(Attribute::new("Deactivation Date", seconds(activation.deactivates_at_ms)));
    }
    if let Some(at_ms) = key.compromised_at_ms {
        all.push(Attribute::new("Compromise Date", seconds(at_ms.get())));
    }
    if let Some(at_ms) = key.destroyed_at_ms {
        all.push(Attribute::new("Destroy Date", seconds(at_ms.get())));
    }
    let last_change_ms = object.map_or(key.created_at_ms, |o| o.last_change_ms);
    all.push(Attribute::new("Last Change Date", seconds(last_change_ms)));
    if let Some(object) = object {
        let mut kept: Vec<Attribute> = Vec::new();
        for attribute in &object.attributes {
            let mut written = from_kept(attribute);
            written.index = kept.iter().filter(|a| a.name == written.name).count() as u32;
            kept.push(written);
        }
        all.extend(kept);
    }
    all
}
