//! The Connect sender: posts signed notifications for sandbox envelopes.
//! (Being written.)
