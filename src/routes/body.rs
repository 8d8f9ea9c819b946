//! The resources of the contract as JSON bodies, and what the OpenAPI document says of them.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::clock::rfc3339;
use crate::store::users::Account;
use crate::webhooks::event::json_object;

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserBody {
    #[schema(format = "uuid")]
    pub id: String,
    /// As given at signup (uniqueness is case-insensitive).
    #[schema(format = Email)]
    pub email: String,
    pub email_verified: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The operator's data about the user (written by the admin API or CLI only). Keys chosen
    /// with `token_claims` are also claims of the access token.
    #[schema(value_type = Object)]
    pub app_metadata: Value,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Profile)]
pub struct ProfileBody {
    #[schema(required = true)]
    pub display_name: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[schema(required = true, format = DateTime)]
    pub last_login_at: Option<String>,
    /// The app's own fields: a JSON object, valid against the operator's `profile_schema`
    /// (without one: at most 4 KiB).
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// `{user, profile}`: GET /auth/me.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Account)]
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
                app_metadata: json_object(&a.app_metadata),
            },
            profile: ProfileBody {
                display_name: a.display_name,
                created_at: rfc3339(a.profile_created_at),
                updated_at: rfc3339(a.profile_updated_at),
                last_login_at: a.last_login_at.map(rfc3339),
                metadata: json_object(&a.metadata),
            },
        }
    }
}

/// What signup, login and refresh answer. The refresh token is never in it: only in its cookie.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionBody {
    #[serde(flatten)]
    pub account: AccountBody,
    /// An EdDSA JWT (`typ: at+jwt`); other services verify it with the JWKS.
    pub access_token: String,
    pub token_type: TokenType,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum TokenType {
    Bearer,
}

/// `{"message": ...}`: the 202 answers of forgot-password and verification resend.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Message)]
pub struct MessageBody {
    pub message: &'static str,
}
