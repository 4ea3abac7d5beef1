//! The room API as the tests read it (no admin token).

use serde_json::Value;

/// `GET {base}/rooms` as JSON.
pub async fn list(base: &str) -> Value {
    get(&format!("{base}/rooms")).await
}

/// `GET {base}/rooms/{room}` as JSON.
pub async fn view(base: &str, room: &str) -> Value {
    get(&format!("{base}/rooms/{room}")).await
}

/// `GET {base}/rooms/{room}` as JSON, with the admin token.
pub async fn view_as(base: &str, room: &str, token: &str) -> Value {
    let url = format!("{base}/rooms/{room}");
    reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// Every session of a room view, over its participants.
pub fn sessions(view: &Value) -> Vec<Value> {
    of_participants(view, "sessions")
}

/// Every published track of a room view, over its participants.
pub fn tracks(view: &Value) -> Vec<Value> {
    of_participants(view, "tracks")
}

fn of_participants(view: &Value, field: &str) -> Vec<Value> {
    view["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p[field].as_array().cloned().unwrap_or_default())
        .collect()
}

async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}
