//! Talking to DocuSign as a user: the JWT Grant (impersonation) now; the
//! token cache, userinfo and the REST client arrive with DocuSign access.

pub mod jwt;
