//! The paths through a `DocuSignEnvelopeInformation` message that carry
//! something the notification needs.

/// The elements the parser cares about, by local name; everything else is
/// [`Tag::Other`] and only counts towards the depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    Root,
    EnvelopeStatus,
    RecipientStatuses,
    RecipientStatus,
    TabStatuses,
    TabStatus,
    CustomFields,
    CustomField,
    DocumentStatuses,
    DocumentStatus,
    DocumentPdfs,
    DocumentPdf,
    PdfBytes,
    TimeZoneOffset,
    TimeGenerated,
    EnvelopeId,
    Subject,
    UserName,
    Email,
    Status,
    Completed,
    Signed,
    DeclineReason,
    Type,
    RoutingOrder,
    RecipientId,
    RoleName,
    TabLabel,
    TabValue,
    Name,
    Value,
    Id,
    DocumentId,
    DocumentType,
    Other,
}

impl Tag {
    pub(super) fn from_local_name(name: &str) -> Self {
        match name {
            "DocuSignEnvelopeInformation" => Self::Root,
            "EnvelopeStatus" => Self::EnvelopeStatus,
            "RecipientStatuses" => Self::RecipientStatuses,
            "RecipientStatus" => Self::RecipientStatus,
            "TabStatuses" => Self::TabStatuses,
            "TabStatus" => Self::TabStatus,
            "CustomFields" => Self::CustomFields,
            "CustomField" => Self::CustomField,
            "DocumentStatuses" => Self::DocumentStatuses,
            "DocumentStatus" => Self::DocumentStatus,
            "DocumentPDFs" => Self::DocumentPdfs,
            "DocumentPDF" => Self::DocumentPdf,
            "PDFBytes" => Self::PdfBytes,
            "TimeZoneOffset" => Self::TimeZoneOffset,
            "TimeGenerated" => Self::TimeGenerated,
            "EnvelopeID" => Self::EnvelopeId,
            "Subject" => Self::Subject,
            "UserName" => Self::UserName,
            "Email" => Self::Email,
            "Status" => Self::Status,
            "Completed" => Self::Completed,
            "Signed" => Self::Signed,
            "DeclineReason" => Self::DeclineReason,
            "Type" => Self::Type,
            "RoutingOrder" => Self::RoutingOrder,
            "RecipientId" => Self::RecipientId,
            "RoleName" => Self::RoleName,
            "TabLabel" => Self::TabLabel,
            "TabValue" => Self::TabValue,
            "Name" => Self::Name,
            "Value" => Self::Value,
            "ID" => Self::Id,
            "DocumentID" => Self::DocumentId,
            "DocumentType" => Self::DocumentType,
            _ => Self::Other,
        }
    }
}

use Tag as T;

/// An element whose text the parser keeps, identified by its full path so
/// that `Status` or `Email` mean the right thing at each level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Envelope(Tag),
    Recipient(Tag),
    Tab(Tag),
    CustomField(Tag),
    Listed(Tag),
    Pdf(Tag),
    TimeZoneOffset,
}

pub(super) fn slot_for(path: &[Tag]) -> Option<Slot> {
    Some(match path {
        [
            T::Root,
            T::EnvelopeStatus,
            leaf @ (T::TimeGenerated | T::EnvelopeId | T::Subject | T::UserName | T::Email | T::Status | T::Completed),
        ] => Slot::Envelope(*leaf),
        [
            T::Root,
            T::EnvelopeStatus,
            T::RecipientStatuses,
            T::RecipientStatus,
            leaf @ (T::Type
            | T::Email
            | T::UserName
            | T::RoutingOrder
            | T::Status
            | T::Signed
            | T::DeclineReason
            | T::RecipientId
            | T::RoleName),
        ] => Slot::Recipient(*leaf),
        [
            T::Root,
            T::EnvelopeStatus,
            T::RecipientStatuses,
            T::RecipientStatus,
            T::TabStatuses,
            T::TabStatus,
            leaf @ (T::TabLabel | T::TabValue),
        ] => Slot::Tab(*leaf),
        [T::Root, T::EnvelopeStatus, T::CustomFields, T::CustomField, leaf @ (T::Name | T::Value)] => {
            Slot::CustomField(*leaf)
        }
        [T::Root, T::EnvelopeStatus, T::DocumentStatuses, T::DocumentStatus, leaf @ (T::Id | T::Name)] => {
            Slot::Listed(*leaf)
        }
        [T::Root, T::DocumentPdfs, T::DocumentPdf, leaf @ (T::Name | T::DocumentId | T::DocumentType)] => {
            Slot::Pdf(*leaf)
        }
        [T::Root, T::TimeZoneOffset] => Slot::TimeZoneOffset,
        _ => return None,
    })
}

pub(super) fn is_pdf_bytes(path: &[Tag]) -> bool {
    matches!(path, [T::Root, T::DocumentPdfs, T::DocumentPdf, T::PdfBytes])
}
