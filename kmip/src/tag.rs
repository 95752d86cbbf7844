//! The TTLV tags this server reads or writes (KMIP 1.0 to 2.0), with their names for logs.
//! Unknown tags are not errors: a request may carry anything in the 42xxxx and 54xxxx ranges,
//! and the message layer ignores or refuses what it does not use.

/// A 24-bit TTLV tag.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub u32);

macro_rules! tags {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        $(pub const $name: Tag = Tag($value);)*
        const NAMES: &[(u32, &str)] = &[$(($value, $text)),*];
    };
}

tags! {
    ACTIVATION_DATE = 0x420001, "ActivationDate";
    APPLICATION_DATA = 0x420002, "ApplicationData";
    APPLICATION_NAMESPACE = 0x420003, "ApplicationNamespace";
    APPLICATION_SPECIFIC_INFORMATION = 0x420004, "ApplicationSpecificInformation";
    ARCHIVE_DATE = 0x420005, "ArchiveDate";
    ASYNCHRONOUS_INDICATOR = 0x420007, "AsynchronousIndicator";
    ATTRIBUTE = 0x420008, "Attribute";
    ATTRIBUTE_INDEX = 0x420009, "AttributeIndex";
    ATTRIBUTE_NAME = 0x42000a, "AttributeName";
    ATTRIBUTE_VALUE = 0x42000b, "AttributeValue";
    AUTHENTICATION = 0x42000c, "Authentication";
    BATCH_COUNT = 0x42000d, "BatchCount";
    BATCH_ERROR_CONTINUATION_OPTION = 0x42000e, "BatchErrorContinuationOption";
    BATCH_ITEM = 0x42000f, "BatchItem";
    BATCH_ORDER_OPTION = 0x420010, "BatchOrderOption";
    COMPROMISE_DATE = 0x420020, "CompromiseDate";
    COMPROMISE_OCCURRENCE_DATE = 0x420021, "CompromiseOccurrenceDate";
    CONTACT_INFORMATION = 0x420022, "ContactInformation";
    CREDENTIAL = 0x420023, "Credential";
    CREDENTIAL_TYPE = 0x420024, "CredentialType";
    CREDENTIAL_VALUE = 0x420025, "CredentialValue";
    CRYPTOGRAPHIC_ALGORITHM = 0x420028, "CryptographicAlgorithm";
    CRYPTOGRAPHIC_LENGTH = 0x42002a, "CryptographicLength";
    CRYPTOGRAPHIC_PARAMETERS = 0x42002b, "CryptographicParameters";
    CRYPTOGRAPHIC_USAGE_MASK = 0x42002c, "CryptographicUsageMask";
    CUSTOM_ATTRIBUTE = 0x42002d, "CustomAttribute";
    DEACTIVATION_DATE = 0x42002f, "DeactivationDate";
    DESTROY_DATE = 0x420033, "DestroyDate";
    DIGEST = 0x420034, "Digest";
    DIGEST_VALUE = 0x420035, "DigestValue";
    HASHING_ALGORITHM = 0x420038, "HashingAlgorithm";
    INITIAL_DATE = 0x420039, "InitialDate";
    KEY_BLOCK = 0x420040, "KeyBlock";
    KEY_COMPRESSION_TYPE = 0x420041, "KeyCompressionType";
    KEY_FORMAT_TYPE = 0x420042, "KeyFormatType";
    KEY_MATERIAL = 0x420043, "KeyMaterial";
    KEY_VALUE = 0x420045, "KeyValue";
    KEY_WRAPPING_DATA = 0x420046, "KeyWrappingData";
    KEY_WRAPPING_SPECIFICATION = 0x420047, "KeyWrappingSpecification";
    LAST_CHANGE_DATE = 0x420048, "LastChangeDate";
    LEASE_TIME = 0x420049, "LeaseTime";
    LINK = 0x42004a, "Link";
    MAXIMUM_ITEMS = 0x42004f, "MaximumItems";
    MAXIMUM_RESPONSE_SIZE = 0x420050, "MaximumResponseSize";
    MESSAGE_EXTENSION = 0x420051, "MessageExtension";
    NAME = 0x420053, "Name";
    NAME_TYPE = 0x420054, "NameType";
    NAME_VALUE = 0x420055, "NameValue";
    OBJECT_GROUP = 0x420056, "ObjectGroup";
    OBJECT_TYPE = 0x420057, "ObjectType";
    OPERATION = 0x42005c, "Operation";
    OPERATION_POLICY_NAME = 0x42005d, "OperationPolicyName";
    PROCESS_START_DATE = 0x420067, "ProcessStartDate";
    PROTECT_STOP_DATE = 0x420068, "ProtectStopDate";
    PROTOCOL_VERSION = 0x420069, "ProtocolVersion";
    PROTOCOL_VERSION_MAJOR = 0x42006a, "ProtocolVersionMajor";
    PROTOCOL_VERSION_MINOR = 0x42006b, "ProtocolVersionMinor";
    QUERY_FUNCTION = 0x420074, "QueryFunction";
    REQUEST_HEADER = 0x420077, "RequestHeader";
    REQUEST_MESSAGE = 0x420078, "RequestMessage";
    REQUEST_PAYLOAD = 0x420079, "RequestPayload";
    RESPONSE_HEADER = 0x42007a, "ResponseHeader";
    RESPONSE_MESSAGE = 0x42007b, "ResponseMessage";
    RESPONSE_PAYLOAD = 0x42007c, "ResponsePayload";
    RESULT_MESSAGE = 0x42007d, "ResultMessage";
    RESULT_REASON = 0x42007e, "ResultReason";
    RESULT_STATUS = 0x42007f, "ResultStatus";
    REVOCATION_MESSAGE = 0x420080, "RevocationMessage";
    REVOCATION_REASON = 0x420081, "RevocationReason";
    REVOCATION_REASON_CODE = 0x420082, "RevocationReasonCode";
    SERVER_INFORMATION = 0x420088, "ServerInformation";
    STATE = 0x42008d, "State";
    STORAGE_STATUS_MASK = 0x42008e, "StorageStatusMask";
    SYMMETRIC_KEY = 0x42008f, "SymmetricKey";
    TEMPLATE_ATTRIBUTE = 0x420091, "TemplateAttribute";
    TIME_STAMP = 0x420092, "TimeStamp";
    UNIQUE_BATCH_ITEM_ID = 0x420093, "UniqueBatchItemId";
    UNIQUE_IDENTIFIER = 0x420094, "UniqueIdentifier";
    USAGE_LIMITS = 0x420095, "UsageLimits";
    USERNAME = 0x420099, "Username";
    VENDOR_IDENTIFICATION = 0x42009d, "VendorIdentification";
    PASSWORD = 0x4200a1, "Password";
    EXTENSION_INFORMATION = 0x4200a4, "ExtensionInformation";
    EXTENSION_NAME = 0x4200a5, "ExtensionName";
    EXTENSION_TAG = 0x4200a6, "ExtensionTag";
    EXTENSION_TYPE = 0x4200a7, "ExtensionType";
    FRESH = 0x4200a8, "Fresh";
    OBJECT_GROUP_MEMBER = 0x4200ac, "ObjectGroupMember";
    ORIGINAL_CREATION_DATE = 0x4200bc, "OriginalCreationDate";
    ALTERNATIVE_NAME = 0x4200bf, "AlternativeName";
    ALTERNATIVE_NAME_VALUE = 0x4200c0, "AlternativeNameValue";
    ALTERNATIVE_NAME_TYPE = 0x4200c1, "AlternativeNameType";
    OFFSET_ITEMS = 0x4200d4, "OffsetItems";
    LOCATED_ITEMS = 0x4200d5, "LocatedItems";
    RNG_ALGORITHM = 0x4200da, "RngAlgorithm";
    RANDOM_NUMBER_GENERATOR = 0x4200de, "RandomNumberGenerator";
    VALIDATION_INFORMATION = 0x4200df, "ValidationInformation";
    PROFILE_INFORMATION = 0x4200eb, "ProfileInformation";
    PROFILE_NAME = 0x4200ec, "ProfileName";
    SERVER_URI = 0x4200ed, "ServerUri";
    SERVER_PORT = 0x4200ee, "ServerPort";
    CAPABILITY_INFORMATION = 0x4200f7, "CapabilityInformation";
    CLIENT_CORRELATION_VALUE = 0x420105, "ClientCorrelationValue";
    SERVER_CORRELATION_VALUE = 0x420106, "ServerCorrelationValue";
    SENSITIVE = 0x420120, "Sensitive";
    ALWAYS_SENSITIVE = 0x420121, "AlwaysSensitive";
    EXTRACTABLE = 0x420122, "Extractable";
    NEVER_EXTRACTABLE = 0x420123, "NeverExtractable";
    ATTRIBUTES = 0x420125, "Attributes";
    COMMON_ATTRIBUTES = 0x420126, "CommonAttributes";
    ATTRIBUTE_REFERENCE = 0x42013b, "AttributeReference";
    CURRENT_ATTRIBUTE = 0x42013c, "CurrentAttribute";
    NEW_ATTRIBUTE = 0x42013d, "NewAttribute";
}

/// The name of a known tag, for logs and errors.
pub fn name(tag: Tag) -> Option<&'static str> {
    NAMES.binary_search_by_key(&tag.0, |(value, _)| *value).ok().map(|i| NAMES[i].1)
}
