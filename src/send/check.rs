//! `countersign check`'s look at the profiles: each template exists in
//! DocuSign and has the roles and tab labels its profile fills, one call per
//! template.

use std::collections::HashMap;

use crate::config::Settings;
use crate::docusign::DocuSign;
use crate::docusign::sending::Template;

/// What the check found for one profile; no problems means it can send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileCheck {
    pub profile: String,
    /// The template's name, when it was found.
    pub template: Option<String>,
    pub problems: Vec<String>,
}

pub async fn check_profiles(settings: &Settings, docusign: &DocuSign) -> Vec<ProfileCheck> {
    let mut templates: HashMap<(String, String), Result<Template, String>> = HashMap::new();
    let mut checks = Vec::new();
    for profile in &settings.profiles {
        let mut check = ProfileCheck { profile: profile.name.clone(), template: None, problems: Vec::new() };
        let user = match profile.account_id {
            Some(account) => docusign.impersonation().user_for(account, None),
            None => docusign.impersonation().users().first().copied(),
        };
        let Some(user) = user else {
            check.problems.push("no DocuSign user to send as (docusign.user_id)".into());
            checks.push(check);
            continue;
        };
        let account = match profile.account_id {
            Some(account) => account,
            None => match docusign.default_account(user).await {
                Ok(account) => account.account_id,
                Err(error) => {
                    check.problems.push(format!("the sending account is unknown: {error}"));
                    checks.push(check);
                    continue;
                }
            },
        };
        let key = (account.to_string(), profile.template_id.to_ascii_lowercase());
        if !templates.contains_key(&key) {
            let found = docusign.template(user, account, &profile.template_id).await.map_err(|e| e.to_string());
            templates.insert(key.clone(), found);
        }
        match &templates[&key] {
            Err(error) => check.problems.push(format!("template {}: {error}", profile.template_id)),
            Ok(template) => {
                check.template = Some(template.name.clone());
                let roles: Vec<&str> = template.roles.iter().map(|r| r.name.as_str()).collect();
                for role in profile.roles.keys() {
                    if !roles.contains(&role.as_str()) {
                        check
                            .problems
                            .push(format!("roles.{role}: the template has no such role (it has {})", roles.join(", ")));
                    }
                }
                for role in &roles {
                    if !profile.roles.contains_key(*role) {
                        check
                            .problems
                            .push(format!("the template's role `{role}` gets no recipient (add roles.{role})"));
                    }
                }
                for label in profile.tabs.keys() {
                    if !template.has_tab(label) {
                        check.problems.push(format!("tabs.{label}: no tab of the template has this label"));
                    }
                }
            }
        }
        checks.push(check);
    }
    checks
}
