//! The KMIP enumerations this server reads or writes. Each is a newtype over the wire value,
//! not a Rust enum, because a request may carry any value and the server must answer the
//! unknown ones ("Operation Not Supported", "Invalid Field") rather than fail to parse them.
//! Values as the KMIP 1.4 and 2.0 specifications number them.

/// An operation a batch item asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Operation(pub u32);

impl Operation {
    pub const CREATE: Operation = Operation(0x1);
    pub const CREATE_KEY_PAIR: Operation = Operation(0x2);
    pub const REGISTER: Operation = Operation(0x3);
    pub const REKEY: Operation = Operation(0x4);
    pub const DERIVE_KEY: Operation = Operation(0x5);
    pub const CERTIFY: Operation = Operation(0x6);
    pub const RECERTIFY: Operation = Operation(0x7);
    pub const LOCATE: Operation = Operation(0x8);
    pub const CHECK: Operation = Operation(0x9);
    pub const GET: Operation = Operation(0xa);
    pub const GET_ATTRIBUTES: Operation = Operation(0xb);
    pub const GET_ATTRIBUTE_LIST: Operation = Operation(0xc);
    pub const ADD_ATTRIBUTE: Operation = Operation(0xd);
    pub const MODIFY_ATTRIBUTE: Operation = Operation(0xe);
    pub const DELETE_ATTRIBUTE: Operation = Operation(0xf);
    pub const OBTAIN_LEASE: Operation = Operation(0x10);
    pub const GET_USAGE_ALLOCATION: Operation = Operation(0x11);
    pub const ACTIVATE: Operation = Operation(0x12);
    pub const REVOKE: Operation = Operation(0x13);
    pub const DESTROY: Operation = Operation(0x14);
    pub const ARCHIVE: Operation = Operation(0x15);
    pub const RECOVER: Operation = Operation(0x16);
    pub const VALIDATE: Operation = Operation(0x17);
    pub const QUERY: Operation = Operation(0x18);
    pub const CANCEL: Operation = Operation(0x19);
    pub const POLL: Operation = Operation(0x1a);
    pub const NOTIFY: Operation = Operation(0x1b);
    pub const PUT: Operation = Operation(0x1c);
    pub const REKEY_KEY_PAIR: Operation = Operation(0x1d);
    pub const DISCOVER_VERSIONS: Operation = Operation(0x1e);
    pub const ENCRYPT: Operation = Operation(0x1f);
    pub const DECRYPT: Operation = Operation(0x20);
    pub const SIGN: Operation = Operation(0x21);
    pub const SIGNATURE_VERIFY: Operation = Operation(0x22);
    pub const MAC: Operation = Operation(0x23);
    pub const MAC_VERIFY: Operation = Operation(0x24);
    pub const RNG_RETRIEVE: Operation = Operation(0x25);
    pub const RNG_SEED: Operation = Operation(0x26);
    pub const HASH: Operation = Operation(0x27);
    pub const CREATE_SPLIT_KEY: Operation = Operation(0x28);
    pub const JOIN_SPLIT_KEY: Operation = Operation(0x29);
    pub const IMPORT: Operation = Operation(0x2a);
    pub const EXPORT: Operation = Operation(0x2b);
    pub const LOG: Operation = Operation(0x2c);
    pub const LOGIN: Operation = Operation(0x2d);
    pub const LOGOUT: Operation = Operation(0x2e);
    pub const DELEGATED_LOGIN: Operation = Operation(0x2f);
    pub const ADJUST_ATTRIBUTE: Operation = Operation(0x30);
    pub const SET_ATTRIBUTE: Operation = Operation(0x31);
    pub const SET_ENDPOINT_ROLE: Operation = Operation(0x32);
    pub const PKCS_11: Operation = Operation(0x33);
    pub const INTEROP: Operation = Operation(0x34);
    pub const REPROVISION: Operation = Operation(0x35);

    /// The operation's name as the specification writes it, for logs and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CREATE => "Create",
            Operation::CREATE_KEY_PAIR => "CreateKeyPair",
            Operation::REGISTER => "Register",
            Operation::REKEY => "Rekey",
            Operation::DERIVE_KEY => "DeriveKey",
            Operation::CERTIFY => "Certify",
            Operation::RECERTIFY => "Recertify",
            Operation::LOCATE => "Locate",
            Operation::CHECK => "Check",
            Operation::GET => "Get",
            Operation::GET_ATTRIBUTES => "GetAttributes",
            Operation::GET_ATTRIBUTE_LIST => "GetAttributeList",
            Operation::ADD_ATTRIBUTE => "AddAttribute",
            Operation::MODIFY_ATTRIBUTE => "ModifyAttribute",
            Operation::DELETE_ATTRIBUTE => "DeleteAttribute",
            Operation::OBTAIN_LEASE => "ObtainLease",
            Operation::GET_USAGE_ALLOCATION => "GetUsageAllocation",
            Operation::ACTIVATE => "Activate",
            Operation::REVOKE => "Revoke",
            Operation::DESTROY => "Destroy",
            Operation::ARCHIVE => "Archive",
            Operation::RECOVER => "Recover",
            Operation::VALIDATE => "Validate",
            Operation::QUERY => "Query",
            Operation::CANCEL => "Cancel",
            Operation::POLL => "Poll",
            Operation::NOTIFY => "Notify",
            Operation::PUT => "Put",
            Operation::REKEY_KEY_PAIR => "RekeyKeyPair",
            Operation::DISCOVER_VERSIONS => "DiscoverVersions",
            Operation::ENCRYPT => "Encrypt",
            Operation::DECRYPT => "Decrypt",
            Operation::SIGN => "Sign",
            Operation::SIGNATURE_VERIFY => "SignatureVerify",
            Operation::MAC => "Mac",
            Operation::MAC_VERIFY => "MacVerify",
            Operation::RNG_RETRIEVE => "RngRetrieve",
            Operation::RNG_SEED => "RngSeed",
            Operation::HASH => "Hash",
            Operation::CREATE_SPLIT_KEY => "CreateSplitKey",
            Operation::JOIN_SPLIT_KEY => "JoinSplitKey",
            Operation::IMPORT => "Import",
            Operation::EXPORT => "Export",
            Operation::LOG => "Log",
            Operation::LOGIN => "Login",
            Operation::LOGOUT => "Logout",
            Operation::DELEGATED_LOGIN => "DelegatedLogin",
            Operation::ADJUST_ATTRIBUTE => "AdjustAttribute",
            Operation::SET_ATTRIBUTE => "SetAttribute",
            Operation::SET_ENDPOINT_ROLE => "SetEndpointRole",
            Operation::PKCS_11 => "Pkcs11",
            Operation::INTEROP => "Interop",
            Operation::REPROVISION => "Reprovision",
            _ => "Unknown",
        }
    }
}

/// Whether a batch item succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResultStatus(pub u32);

impl ResultStatus {
    pub const SUCCESS: ResultStatus = ResultStatus(0x0);
    pub const OPERATION_FAILED: ResultStatus = ResultStatus(0x1);
    pub const OPERATION_PENDING: ResultStatus = ResultStatus(0x2);
    pub const OPERATION_UNDONE: ResultStatus = ResultStatus(0x3);
}

/// Why a batch item failed (1.x values, then the ones 2.0 added).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResultReason(pub u32);

impl ResultReason {
    pub const ITEM_NOT_FOUND: ResultReason = ResultReason(0x1);
    pub const RESPONSE_TOO_LARGE: ResultReason = ResultReason(0x2);
    pub const AUTHENTICATION_NOT_SUCCESSFUL: ResultReason = ResultReason(0x3);
    pub const INVALID_MESSAGE: ResultReason = ResultReason(0x4);
    pub const OPERATION_NOT_SUPPORTED: ResultReason = ResultReason(0x5);
    pub const MISSING_DATA: ResultReason = ResultReason(0x6);
    pub const INVALID_FIELD: ResultReason = ResultReason(0x7);
    pub const FEATURE_NOT_SUPPORTED: ResultReason = ResultReason(0x8);
    pub const OPERATION_CANCELED_BY_REQUESTER: ResultReason = ResultReason(0x9);
    pub const CRYPTOGRAPHIC_FAILURE: ResultReason = ResultReason(0xa);
    pub const ILLEGAL_OPERATION: ResultReason = ResultReason(0xb);
    pub const PERMISSION_DENIED: ResultReason = ResultReason(0xc);
    pub const OBJECT_ARCHIVED: ResultReason = ResultReason(0xd);
    pub const INDEX_OUT_OF_BOUNDS: ResultReason = ResultReason(0xe);
    pub const APPLICATION_NAMESPACE_NOT_SUPPORTED: ResultReason = ResultReason(0xf);
    pub const KEY_FORMAT_TYPE_NOT_SUPPORTED: ResultReason = ResultReason(0x10);
    pub const KEY_COMPRESSION_TYPE_NOT_SUPPORTED: ResultReason = ResultReason(0x11);
    pub const ENCODING_OPTION_ERROR: ResultReason = ResultReason(0x12);
    pub const KEY_VALUE_NOT_PRESENT: ResultReason = ResultReason(0x13);
    pub const ATTESTATION_REQUIRED: ResultReason = ResultReason(0x14);
    pub const ATTESTATION_FAILED: ResultReason = ResultReason(0x15);
    pub const SENSITIVE: ResultReason = ResultReason(0x16);
    pub const NOT_EXTRACTABLE: ResultReason = ResultReason(0x17);
    pub const OBJECT_ALREADY_EXISTS: ResultReason = ResultReason(0x18);
    pub const GENERAL_FAILURE: ResultReason = ResultReason(0x100);
    pub const INVALID_TICKET: ResultReason = ResultReason(0x19);
    pub const USAGE_LIMIT_EXCEEDED: ResultReason = ResultReason(0x1a);
    pub const NUMERIC_RANGE: ResultReason = ResultReason(0x1b);
    pub const INVALID_DATA_TYPE: ResultReason = ResultReason(0x1c);
    pub const READ_ONLY_ATTRIBUTE: ResultReason = ResultReason(0x1d);
    pub const MULTI_VALUED_ATTRIBUTE: ResultReason = ResultReason(0x1e);
    pub const UNSUPPORTED_ATTRIBUTE: ResultReason = ResultReason(0x1f);
    pub const ATTRIBUTE_INSTANCE_NOT_FOUND: ResultReason = ResultReason(0x20);
    pub const ATTRIBUTE_NOT_FOUND: ResultReason = ResultReason(0x21);
    pub const ATTRIBUTE_READ_ONLY: ResultReason = ResultReason(0x22);
    pub const ATTRIBUTE_SINGLE_VALUED: ResultReason = ResultReason(0x23);
    pub const BAD_CRYPTOGRAPHIC_PARAMETERS: ResultReason = ResultReason(0x24);
    pub const BAD_PASSWORD: ResultReason = ResultReason(0x25);
    pub const CODEC_ERROR: ResultReason = ResultReason(0x26);
    pub const ILLEGAL_OBJECT_TYPE: ResultReason = ResultReason(0x28);
    pub const INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK: ResultReason = ResultReason(0x29);
    pub const INTERNAL_SERVER_ERROR: ResultReason = ResultReason(0x2a);
    pub const INVALID_ASYNCHRONOUS_CORRELATION_VALUE: ResultReason = ResultReason(0x2b);
    pub const INVALID_ATTRIBUTE: ResultReason = ResultReason(0x2c);
    pub const INVALID_ATTRIBUTE_VALUE: ResultReason = ResultReason(0x2d);
    pub const INVALID_CORRELATION_VALUE: ResultReason = ResultReason(0x2e);
    pub const INVALID_CSR: ResultReason = ResultReason(0x2f);
    pub const INVALID_OBJECT_TYPE: ResultReason = ResultReason(0x30);
    pub const KEY_WRAP_TYPE_NOT_SUPPORTED: ResultReason = ResultReason(0x32);
    pub const MISSING_INITIALIZATION_VECTOR: ResultReason = ResultReason(0x34);
    pub const NON_UNIQUE_NAME_ATTRIBUTE: ResultReason = ResultReason(0x35);
    pub const OBJECT_DESTROYED: ResultReason = ResultReason(0x36);
    pub const OBJECT_NOT_FOUND: ResultReason = ResultReason(0x37);
    pub const NOT_AUTHORISED: ResultReason = ResultReason(0x39);
    pub const SERVER_LIMIT_EXCEEDED: ResultReason = ResultReason(0x3a);
    pub const UNKNOWN_ENUMERATION: ResultReason = ResultReason(0x3b);
    pub const UNKNOWN_MESSAGE_EXTENSION: ResultReason = ResultReason(0x3c);
    pub const UNKNOWN_TAG: ResultReason = ResultReason(0x3d);
    pub const UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS: ResultReason = ResultReason(0x3e);
    pub const UNSUPPORTED_PROTOCOL_VERSION: ResultReason = ResultReason(0x3f);
    pub const WRAPPING_OBJECT_ARCHIVED: ResultReason = ResultReason(0x40);
    pub const WRAPPING_OBJECT_DESTROYED: ResultReason = ResultReason(0x41);
    pub const WRAPPING_OBJECT_NOT_FOUND: ResultReason = ResultReason(0x42);
    pub const WRONG_KEY_LIFECYCLE_STATE: ResultReason = ResultReason(0x43);
    pub const PROTECTION_STORAGE_UNAVAILABLE: ResultReason = ResultReason(0x44);
    pub const PKCS11_CODEC_ERROR: ResultReason = ResultReason(0x45);
    pub const PKCS11_INVALID_FUNCTION: ResultReason = ResultReason(0x46);
    pub const PKCS11_INVALID_INTERFACE: ResultReason = ResultReason(0x47);
}

/// What a Query asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryFunction(pub u32);

impl QueryFunction {
    pub const QUERY_OPERATIONS: QueryFunction = QueryFunction(0x1);
    pub const QUERY_OBJECTS: QueryFunction = QueryFunction(0x2);
    pub const QUERY_SERVER_INFORMATION: QueryFunction = QueryFunction(0x3);
    pub const QUERY_APPLICATION_NAMESPACES: QueryFunction = QueryFunction(0x4);
    pub const QUERY_EXTENSION_LIST: QueryFunction = QueryFunction(0x5);
    pub const QUERY_EXTENSION_MAP: QueryFunction = QueryFunction(0x6);
    pub const QUERY_ATTESTATION_TYPES: QueryFunction = QueryFunction(0x7);
    pub const QUERY_RNGS: QueryFunction = QueryFunction(0x8);
    pub const QUERY_VALIDATIONS: QueryFunction = QueryFunction(0x9);
    pub const QUERY_PROFILES: QueryFunction = QueryFunction(0xa);
    pub const QUERY_CAPABILITIES: QueryFunction = QueryFunction(0xb);
    pub const QUERY_CLIENT_REGISTRATION_METHODS: QueryFunction = QueryFunction(0xc);
    pub const QUERY_DEFAULTS_INFORMATION: QueryFunction = QueryFunction(0xd);
    pub const QUERY_STORAGE_PROTECTION_MASKS: QueryFunction = QueryFunction(0xe);
}

/// The kind of managed object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectType(pub u32);

impl ObjectType {
    pub const CERTIFICATE: ObjectType = ObjectType(0x1);
    pub const SYMMETRIC_KEY: ObjectType = ObjectType(0x2);
    pub const PUBLIC_KEY: ObjectType = ObjectType(0x3);
    pub const PRIVATE_KEY: ObjectType = ObjectType(0x4);
    pub const SPLIT_KEY: ObjectType = ObjectType(0x5);
    pub const TEMPLATE: ObjectType = ObjectType(0x6);
    pub const SECRET_DATA: ObjectType = ObjectType(0x7);
    pub const OPAQUE_DATA: ObjectType = ObjectType(0x8);
    pub const PGP_KEY: ObjectType = ObjectType(0x9);
    pub const CERTIFICATE_REQUEST: ObjectType = ObjectType(0xa);
}

/// A managed object's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct State(pub u32);

impl State {
    pub const PRE_ACTIVE: State = State(0x1);
    pub const ACTIVE: State = State(0x2);
    pub const DEACTIVATED: State = State(0x3);
    pub const COMPROMISED: State = State(0x4);
    pub const DESTROYED: State = State(0x5);
    pub const DESTROYED_COMPROMISED: State = State(0x6);
}

/// How a Name is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameType(pub u32);

impl NameType {
    pub const UNINTERPRETED_TEXT_STRING: NameType = NameType(0x1);
    pub const URI: NameType = NameType(0x2);
}

/// How an Alternative Name is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlternativeNameType(pub u32);

impl AlternativeNameType {
    pub const UNINTERPRETED_TEXT_STRING: AlternativeNameType = AlternativeNameType(0x1);
    pub const URI: AlternativeNameType = AlternativeNameType(0x2);
    pub const OBJECT_SERIAL_NUMBER: AlternativeNameType = AlternativeNameType(0x3);
    pub const EMAIL_ADDRESS: AlternativeNameType = AlternativeNameType(0x4);
    pub const DNS_NAME: AlternativeNameType = AlternativeNameType(0x5);
    pub const X500_DISTINGUISHED_NAME: AlternativeNameType = AlternativeNameType(0x6);
    pub const IP_ADDRESS: AlternativeNameType = AlternativeNameType(0x7);
}

/// How key material is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyFormatType(pub u32);

impl KeyFormatType {
    pub const RAW: KeyFormatType = KeyFormatType(0x1);
    pub const OPAQUE: KeyFormatType = KeyFormatType(0x2);
    pub const TRANSPARENT_SYMMETRIC_KEY: KeyFormatType = KeyFormatType(0x7);
}

/// Why a client revokes a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevocationReasonCode(pub u32);

impl RevocationReasonCode {
    pub const UNSPECIFIED: RevocationReasonCode = RevocationReasonCode(0x1);
    pub const KEY_COMPROMISE: RevocationReasonCode = RevocationReasonCode(0x2);
    pub const CA_COMPROMISE: RevocationReasonCode = RevocationReasonCode(0x3);
    pub const AFFILIATION_CHANGED: RevocationReasonCode = RevocationReasonCode(0x4);
    pub const SUPERSEDED: RevocationReasonCode = RevocationReasonCode(0x5);
    pub const CESSATION_OF_OPERATION: RevocationReasonCode = RevocationReasonCode(0x6);
    pub const PRIVILEGE_WITHDRAWN: RevocationReasonCode = RevocationReasonCode(0x7);
}

/// What a server does with the rest of a batch after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchErrorContinuation(pub u32);

impl BatchErrorContinuation {
    pub const CONTINUE: BatchErrorContinuation = BatchErrorContinuation(0x1);
    pub const STOP: BatchErrorContinuation = BatchErrorContinuation(0x2);
    pub const UNDO: BatchErrorContinuation = BatchErrorContinuation(0x3);
}

/// An algorithm (only AES keys are made here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CryptographicAlgorithm(pub u32);

impl CryptographicAlgorithm {
    pub const DES: CryptographicAlgorithm = CryptographicAlgorithm(0x1);
    pub const TRIPLE_DES: CryptographicAlgorithm = CryptographicAlgorithm(0x2);
    pub const AES: CryptographicAlgorithm = CryptographicAlgorithm(0x3);
}

/// Bits of the Cryptographic Usage Mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UsageMask(pub u32);

impl UsageMask {
    pub const SIGN: UsageMask = UsageMask(0x1);
    pub const VERIFY: UsageMask = UsageMask(0x2);
    pub const ENCRYPT: UsageMask = UsageMask(0x4);
    pub const DECRYPT: UsageMask = UsageMask(0x8);
    pub const WRAP_KEY: UsageMask = UsageMask(0x10);
    pub const UNWRAP_KEY: UsageMask = UsageMask(0x20);
    pub const EXPORT: UsageMask = UsageMask(0x40);
}
