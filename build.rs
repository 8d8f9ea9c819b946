//! Rebuild when a migration is added or changed: `sqlx::migrate!` embeds the `migrations/`
//! directory at compile time, and cargo does not know to watch it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
