//! Airflow connections: `[source] connection = "<id>"` and `[storage] connection = "<id>"` read
//! the environment variable `AIRFLOW_CONN_<ID>` (the id upper-cased), the way Airflow hands
//! connections to tasks, in either of Airflow's two serialized forms:
//!
//! - URI: `mssql://login:password@host:port/schema?encrypt=true` (percent-encoded parts; the
//!   query string holds the extras; `__extra__=<json>` holds them as one JSON object);
//! - JSON: `{"conn_type": "mssql", "host": ..., "port": 1433, "schema": ..., "login": ...,
//!   "password": ..., "extra": {...}}` (`extra` may also be a JSON string).
//!
//! Format source: Airflow's `Connection.get_uri()`/`Connection.as_json()` ("Managing
//! Connections", "Storing connections in environment variables"). Extras written the old way,
//! `extra__<conn_type>__<key>`, are read as `<key>`.
//!
//! The values are read when a run needs them and never stored in the validated pipeline, so
//! `smelter plan` output and logs cannot carry them; [`secrets`] feeds the log scrubber.

use std::collections::BTreeMap;

/// One Airflow connection, parsed. `Debug` hides the password and the extras' values.
#[derive(Clone, Default, PartialEq)]
pub struct Connection {
    /// Airflow connection type (`mssql`, `wasb`, `adls`, `aws`, ...), as written.
    pub conn_type: String,
    /// Host (for `wasb`, an account URL or an emulator endpoint).
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Airflow's `schema` field: the database for `mssql`.
    pub schema: Option<String>,
    /// Login (user name; the access key id for `aws`; the account name for `wasb`).
    pub login: Option<String>,
    /// Password (the secret access key for `aws`; the account key for `wasb`).
    pub password: Option<String>,
    /// Extras, every value as text (JSON strings unquoted, other JSON values as written).
    pub extra: BTreeMap<String, String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("conn_type", &self.conn_type)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("schema", &self.schema)
            .field("login", &self.login)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The environment variable that holds connection `id`: `AIRFLOW_CONN_` and the id upper-cased.
pub fn env_var(id: &str) -> String {
    format!("AIRFLOW_CONN_{}", id.to_ascii_uppercase())
}

/// Reads connection `id` from `AIRFLOW_CONN_<ID>`. The error (unset or unparsable; callers make
/// it a configuration error, exit 2) names the variable, never its value.
pub fn from_env(id: &str) -> std::result::Result<Connection, String> {
    let var = env_var(id);
    let text = std::env::var(&var).map_err(|_| {
        format!(
            "connection `{id}`: environment variable {var} is not set (Airflow sets it for \
             connections defined as environment variables; outside Airflow, export it)"
        )
    })?;
    parse(&text).map_err(|m| format!("connection `{id}` ({var}): {m}"))
}

/// Parses one connection in the URI or the JSON form (JSON when it starts with `{`). The error
/// text names what is wrong, never a value.
pub fn parse(text: &str) -> std::result::Result<Connection, String> {
    let text = text.trim();
    if text.starts_with('{') {
        parse_json(text)
    } else {
        parse_uri(text)
    }
}

fn parse_json(text: &str) -> std::result::Result<Connection, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON (line {})", e.line()))?;
    let obj = v.as_object().ok_or("the JSON form must be an object")?;
    let text_of = |k: &str| -> Option<String> {
        match obj.get(k)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) if s.is_empty() => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    };
    let port = match obj.get("port") {
        None | Some(serde_json::Value::Null) => None,
        Some(p) => Some(port_of(&p.to_string().replace('"', ""))?),
    };
    let mut conn = Connection {
        conn_type: text_of("conn_type").unwrap_or_default(),
        host: text_of("host"),
        port,
        schema: text_of("schema"),
        login: text_of("login"),
        password: text_of("password"),
        extra: BTreeMap::new(),
    };
    match obj.get("extra") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => {}
        Some(serde_json::Value::String(s)) => conn.add_extras(s)?,
        Some(serde_json::Value::Object(m)) => conn.add_extra_map(m),
        Some(_) => return Err("`extra` must be an object or a JSON string".into()),
    }
    if conn.conn_type.is_empty() {
        return Err("the JSON form needs `conn_type`".into());
    }
    Ok(conn)
}

/// Stands in for the empty host of URIs such as `aws://key:secret@/?region_name=x`, which
/// Airflow writes for connections without a host and the URL parser refuses.
const NO_HOST: &str = "airflow-connection-without-host";

fn parse_uri(text: &str) -> std::result::Result<Connection, String> {
    let filled;
    let text = match text.find("://") {
        Some(i) => {
            let rest = &text[i + 3..];
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            if rest[..end].ends_with('@') {
                filled = format!("{}{NO_HOST}{}", &text[..i + 3 + end], &rest[end..]);
                &filled
            } else {
                text
            }
        }
        None => text,
    };
    let url = url::Url::parse(text).map_err(|e| {
        format!("not a connection URI or JSON object ({e}); the URI form is type://login:password@host:port/schema?extra=value")
    })?;
    let decode = |s: &str| -> Option<String> {
        let d = percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned();
        (!d.is_empty()).then_some(d)
    };
    let mut conn = Connection {
        // Airflow writes `_` in the type as `-` in the scheme.
        conn_type: url.scheme().replace('-', "_"),
        host: url.host_str().filter(|h| *h != NO_HOST).and_then(decode),
        port: url.port(),
        schema: decode(url.path().trim_start_matches('/')),
        login: decode(url.username()),
        password: url.password().and_then(decode),
        extra: BTreeMap::new(),
    };
    for (k, v) in url.query_pairs() {
        if k == "__extra__" {
            conn.add_extras(&v)?;
        } else {
            conn.insert_extra(&k, v.into_owned());
        }
    }
    Ok(conn)
}

fn port_of(p: &str) -> std::result::Result<u16, String> {
    p.trim()
        .parse()
        .map_err(|_| "`port` is not a port number".to_string())
}

impl Connection {
    fn add_extras(&mut self, json: &str) -> std::result::Result<(), String> {
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(m)) => {
                self.add_extra_map(&m);
                Ok(())
            }
            _ => Err("`extra` is not a JSON object".into()),
        }
    }

    fn add_extra_map(&mut self, m: &serde_json::Map<String, serde_json::Value>) {
        for (k, v) in m {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => continue,
                other => other.to_string(),
            };
            self.insert_extra(k, v);
        }
    }

    fn insert_extra(&mut self, key: &str, value: String) {
        // Old-style `extra__wasb__sas_token` is `sas_token`.
        let key = key
            .strip_prefix("extra__")
            .and_then(|rest| rest.split_once("__").map(|(_, k)| k))
            .unwrap_or(key);
        self.extra.insert(key.to_string(), value);
    }

    /// Extra `key` when set and not empty.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extra
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Extra `key` as a boolean (`true`/`false`, `1`/`0`, `yes`/`no`); `None` when unset.
    pub fn extra_bool(&self, key: &str) -> std::result::Result<Option<bool>, String> {
        self.extra(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("extra `{key}` must be true or false")),
            })
            .transpose()
    }

    /// The values of this connection that are secrets: the password and the secret extras.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out: Vec<String> = self.password.iter().cloned().collect();
        for (k, v) in &self.extra {
            let k = k.to_ascii_lowercase();
            if SECRET_EXTRAS.contains(&k.as_str())
                || k.ends_with("password")
                || k.ends_with("secret")
                || k.ends_with("token")
                || k.ends_with("_key")
            {
                out.push(v.clone());
            }
        }
        out
    }

    /// Object-store options (object_store's `aws_*`/`azure_*` keys, secrets included) for a
    /// `[storage] connection`. `wasb`/`adls`/`azure_data_lake`: account name from extra
    /// `account_name` (or the login, or the host `<account>.blob.core.windows.net`), key from
    /// the password (or extra `shared_access_key`), SAS from extra `sas_token`, an `http(s)://`
    /// host as the endpoint (Azurite); `aws`/`s3`: login/password as access key id/secret,
    /// extras `aws_session_token`, `endpoint_url`, `region_name`. Other types are an error.
    pub fn storage_options(&self) -> std::result::Result<BTreeMap<String, String>, String> {
        let mut o = BTreeMap::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                o.insert(k.to_string(), v.to_string());
            }
        };
        match self.conn_type.as_str() {
            "wasb" | "adls" | "azure_data_lake" | "azure_blob_storage" => {
                let host = self.host.as_deref().unwrap_or_default();
                let host_url = host.starts_with("http://") || host.starts_with("https://");
                let host_account = (!host_url && !host.is_empty())
                    .then(|| host.split('.').next().unwrap_or_default());
                put(
                    "azure_storage_account_name",
                    self.extra("account_name")
                        .or(self.login.as_deref())
                        .or(host_account),
                );
                put(
                    "azure_storage_account_key",
                    self.password.as_deref().or(self.extra("shared_access_key")),
                );
                put(
                    "azure_storage_sas_key",
                    self.extra("sas_token").map(|s| s.trim_start_matches('?')),
                );
                let endpoint = self
                    .extra("endpoint")
                    .or(host_url.then_some(host))
                    .map(|e| e.trim_end_matches('/'));
                put("azure_storage_endpoint", endpoint);
                if endpoint.is_some_and(|e| e.starts_with("http://")) {
                    put("azure_allow_http", Some("true"));
                }
                put("azure_storage_tenant_id", self.extra("tenant_id"));
                put("azure_storage_client_id", self.extra("client_id"));
                put("azure_storage_client_secret", self.extra("client_secret"));
            }
            "aws" | "s3" => {
                put("aws_access_key_id", self.login.as_deref());
                put("aws_secret_access_key", self.password.as_deref());
                put("aws_session_token", self.extra("aws_session_token"));
                put("aws_region", self.extra("region_name"));
                let endpoint = self.extra("endpoint_url").or(self.host.as_deref());
                put("aws_endpoint", endpoint);
                if endpoint.is_some_and(|e| e.starts_with("http://")) {
                    put("aws_allow_http", Some("true"));
                }
            }
            other => {
                return Err(format!(
                    "conn type `{other}` is not a storage connection; use `wasb`, `adls` or `aws`"
                ))
            }
        }
        Ok(o)
    }
}

/// Extra keys whose values are secrets.
const SECRET_EXTRAS: [&str; 7] = [
    "sas_token",
    "shared_access_key",
    "client_secret",
    "aws_secret_access_key",
    "aws_session_token",
    "connection_string",
    "key",
];

/// Every secret value of every `AIRFLOW_CONN_*` variable in the environment (parsable or not: an
/// unparsable one is kept whole), for the log scrubber.
pub fn secrets() -> Vec<String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AIRFLOW_CONN_"))
        .flat_map(|(_, v)| {
            let mut out = parse(&v).map(|c| c.secret_values()).unwrap_or_default();
            // The whole value, and each secret as the URI form writes it (percent-encoded).
            let encoded: Vec<String> = out
                .iter()
                .map(|s| {
                    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                        .to_string()
                })
                .collect();
            out.extend(encoded);
            out.push(v);
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_form_with_special_characters() {
        // Airflow's get_uri() percent-encodes the password: p@ss:w/rd?#%&= .
        let c = parse(
            "mssql://sa:p%40ss%3Aw%2Frd%3F%23%25%26%3D@db.example.com:1433/Sales?encrypt=true&trust_server_certificate=false",
        )
        .unwrap();
        assert_eq!(c.conn_type, "mssql");
        assert_eq!(c.login.as_deref(), Some("sa"));
        assert_eq!(c.password.as_deref(), Some("p@ss:w/rd?#%&="));
        assert_eq!(c.host.as_deref(), Some("db.example.com"));
        assert_eq!(c.port, Some(1433));
        assert_eq!(c.schema.as_deref(), Some("Sales"));
        assert_eq!(c.extra_bool("encrypt").unwrap(), Some(true));
        assert_eq!(
            c.extra_bool("trust_server_certificate").unwrap(),
            Some(false)
        );
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn uri_form_with_json_extra_and_old_style_keys() {
        let c = parse(
            "wasb://devstoreaccount1:k%2Bey%3D%3D@http%3A%2F%2F127.0.0.1%3A10000%2Fdevstoreaccount1?__extra__=%7B%22sas_token%22%3A+%22sv%3D1%26sig%3Dab%252B%22%7D",
        )
        .unwrap();
        assert_eq!(
            c.host.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert_eq!(c.password.as_deref(), Some("k+ey=="));
        assert_eq!(c.extra("sas_token"), Some("sv=1&sig=ab%2B"));
        let c = parse("wasb://acct@?extra__wasb__sas_token=tok").unwrap();
        assert_eq!(c.extra("sas_token"), Some("tok"));
        assert_eq!(c.host, None);
        let c = parse("aws://AKID:wJal%2FK7%2B@/?region_name=eu-central-1").unwrap();
        assert_eq!(c.password.as_deref(), Some("wJal/K7+"));
        assert_eq!(c.host, None);
        assert_eq!(c.storage_options().unwrap()["aws_region"], "eu-central-1");
    }

    #[test]
    fn json_form_with_special_characters() {
        let c = parse(
            r#"{"conn_type": "mssql", "host": "db", "port": "1433", "schema": "Sales",
                "login": "etl", "password": "p@ss:w/rd?#%&=\"{}", "extra": "{\"encrypt\": false}"}"#,
        )
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("p@ss:w/rd?#%&=\"{}"));
        assert_eq!(c.port, Some(1433));
        assert_eq!(c.extra_bool("encrypt").unwrap(), Some(false));
        let c = parse(r#"{"conn_type": "aws", "login": "AKID", "password": "s/e+c", "extra": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}}"#).unwrap();
        let o = c.storage_options().unwrap();
        assert_eq!(o["aws_access_key_id"], "AKID");
        assert_eq!(o["aws_secret_access_key"], "s/e+c");
        assert_eq!(o["aws_endpoint"], "http://127.0.0.1:9000");
        assert_eq!(o["aws_region"], "eu-west-1");
        assert_eq!(o["aws_allow_http"], "true");
        assert_eq!(c.secret_values(), vec!["s/e+c".to_string()]);
    }

    #[test]
    fn wasb_maps_to_azure_options() {
        let c = parse(
            r#"{"conn_type": "wasb", "login": "acct", "extra": {"sas_token": "?sv=2&sig=x"}}"#,
        )
        .unwrap();
        let o = c.storage_options().unwrap();
        assert_eq!(o["azure_storage_account_name"], "acct");
        assert_eq!(o["azure_storage_sas_key"], "sv=2&sig=x");
        assert!(!o.contains_key("azure_storage_endpoint"));
        assert_eq!(c.secret_values(), vec!["?sv=2&sig=x".to_string()]);
        let c = parse(r#"{"conn_type": "mssql"}"#).unwrap();
        assert!(c.storage_options().is_err());
    }

    #[test]
    fn bad_input_names_no_value() {
        let e =
            parse(r#"{"conn_type": "mssql", "password": "hunter22", "port": "x"}"#).unwrap_err();
        assert!(!e.contains("hunter22"), "{e}");
        assert!(parse("{not json hunter22")
            .unwrap_err()
            .find("hunter22")
            .is_none());
        assert!(parse(r#"{"login": "a"}"#).is_err());
    }
}
