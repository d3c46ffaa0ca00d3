//! `selfheal hash-token`: reads a token on standard input and prints its
//! SHA-256, for `change_token_sha256` (the token itself is never stored).

use super::prelude::*;

/// Runs it.
pub async fn run() -> anyhow::Result<()> {
    let mut token = String::new();
    std::io::stdin().read_line(&mut token)?;
    let token = token.trim_end_matches(['\r', '\n']);
    if token.len() < 16 {
        input!("a token needs at least 16 characters");
    }
    println!("{}", selfheal_brain::api::hash_token(token));
    Ok(())
}
