//! The resources of the contract as JSON bodies.

use serde::Serialize;

use crate::clock::rfc3339;
use crate::store::users::Account;

#[derive(Debug, Serialize)]
pub struct UserBody {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub created_at: String,
}

#[derive(Debug, Serialize)]
pub struct ProfileBody {
    pub display_name: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub last_login_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AccountBody {
    pub user: UserBody,
    pub profile: ProfileBody,
}

impl From<Account> for AccountBody {
    fn from(a: Account) -> Self {
        AccountBody {
            user: UserBody {
                id: a.id,
                email: a.email,
                email_verified: a.email_verified_at.is_some(),
                created_at: rfc3339(a.created_at),
            },
            profile: ProfileBody {
                display_name: a.display_name,
                created_at: rfc3339(a.profile_created_at),
                updated_at: rfc3339(a.profile_updated_at),
                last_login_at: a.last_login_at.map(rfc3339),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SessionBody {
    #[serde(flatten)]
    pub account: AccountBody,
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}
