// A real OAuth2 authorization server for the REST catalog's OAuth2 tests
// (tests/python/test_iceberg_oauth2.py): panva's certified `oidc-provider` (npm), with the client
// credentials grant (RFC 6749 section 4.4) enabled for one confidential client that
// authenticates with `client_secret_post`, as Iceberg REST clients do; opaque access tokens.
//
// Optionally also a gateway in front of an Iceberg REST catalog that only takes its own tokens:
// it lets a request through only when its `Authorization: Bearer` token is a live client
// credentials token this server issued (looked up in the provider's own token store, expired
// and unknown tokens refused with 401), and forwards it to the catalog with the catalog's token.
//
// Settings, from the environment:
//   OAUTH2_NODE_MODULES   the node_modules folder oidc-provider is installed in (required)
//   OAUTH2_CLIENT_ID, OAUTH2_CLIENT_SECRET  the one client (required)
//   OAUTH2_SCOPE          scopes the client may be granted, space-separated (default "catalog")
//   OAUTH2_SERVER_SCOPES  scopes the server knows (default OAUTH2_SCOPE); a known scope the
//                         client may not have is refused (invalid_scope), an unknown one ignored
//   OAUTH2_TOKEN_TTL      lifetime of an access token in seconds (default 3600)
//   OAUTH2_PORT           port of the authorization server (default 0: any free port)
//   OAUTH2_UPSTREAM       base URL of the catalog behind the gateway (optional)
//   OAUTH2_UPSTREAM_TOKEN the catalog's own bearer token, sent upstream by the gateway
//   OAUTH2_FIRST_DELAY    seconds the gateway holds its first request before forwarding it
//                         (default 0): a slow catalog, so that a client's token expires meanwhile
//
// Both listeners bind 127.0.0.1 only. Standard output gets one JSON object a line: first
// {"event":"ready","port":...,"gateway_port":...}, then the provider's events (`grant.success`,
// `grant.error`, `server_error`) and the gateway's (`gateway.accepted`, `gateway.refused`,
// `gateway.upstream_error`), each with the client id where there is one and a token named by a digest
// (`token_ref`); never a secret or a token.
// SIGTERM stops it.

import { createHash, generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = (name, fallback) => {
  const value = process.env[name];
  if (value === undefined || value === '') {
    if (fallback === undefined) {
      process.stderr.write(`oauth2_server: set ${name}\n`);
      process.exit(2);
    }
    return fallback;
  }
  return value;
};

// Installed outside the repository; ES modules do not search NODE_PATH, so load it by path.
const { default: Provider } = await import(
  pathToFileURL(path.join(env('OAUTH2_NODE_MODULES'), 'oidc-provider', 'lib', 'index.js')).href
);

const clientId = env('OAUTH2_CLIENT_ID');
const clientSecret = env('OAUTH2_CLIENT_SECRET');
const scope = env('OAUTH2_SCOPE', 'catalog');
const serverScopes = env('OAUTH2_SERVER_SCOPES', scope);
const ttl = Number(env('OAUTH2_TOKEN_TTL', '3600'));
const port = Number(env('OAUTH2_PORT', '0'));
const upstream = env('OAUTH2_UPSTREAM', '');
const upstreamToken = env('OAUTH2_UPSTREAM_TOKEN', '');
const firstDelay = Number(env('OAUTH2_FIRST_DELAY', '0'));

// An opaque token's value is its id in the store: events name a token by a digest of it.
const ref = (jti) => jti && createHash('sha256').update(jti).digest('hex').slice(0, 16);

const log = (event, fields = {}) => {
  process.stdout.write(`${JSON.stringify({ event, time: Date.now() / 1000, ...fields })}\n`);
};

const listen = (server, p) => new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(p, '127.0.0.1', () => resolve(server.address().port));
});

// The issuer names the port, so the listener comes first and the provider is bound to it after.
let handler = (req, res) => { res.writeHead(503); res.end(); };
const server = http.createServer((req, res) => handler(req, res));
const actualPort = await listen(server, port);
const issuer = `http://127.0.0.1:${actualPort}`;

// A signing key of its own (the provider needs one; the access tokens here are opaque).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: 'test' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_post',
    scope,
  }],
  scopes: serverScopes.split(' '),
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
  },
  jwks: { keys: [jwk] },
  cookies: { keys: ['oauth2-test-cookie-key'] },
  ttl: { ClientCredentials: ttl },
  clockTolerance: 0, // an access token is refused from its `exp` on, not 15 s later
});

const clientOf = (ctx) => ctx?.oidc?.client?.clientId ?? ctx?.oidc?.params?.client_id;
provider.on('grant.success', (ctx) => {
  const token = ctx.oidc.entities?.ClientCredentials;
  log('grant.success', {
    client_id: clientOf(ctx),
    grant_type: ctx.oidc.params?.grant_type,
    scope: token?.scope ?? null,
    expires_in: ctx.body?.expires_in,
    token_ref: ref(token?.jti) ?? null,
  });
});
provider.on('grant.error', (ctx, err) => log('grant.error', {
  client_id: clientOf(ctx) ?? null,
  error: err.error ?? err.name,
  status: err.statusCode ?? err.status,
}));
provider.on('server_error', (ctx, err) => log('server_error', { message: err.message }));

handler = provider.callback();

let gatewayPort = null;
if (upstream) {
  const target = new URL(upstream);
  let seen = 0;
  const gateway = http.createServer(async (req, res) => {
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    // The provider's own record of the token: undefined if unknown, expired or revoked.
    const token = bearer ? await provider.ClientCredentials.find(bearer) : undefined;
    if (!token) {
      log('gateway.refused', {
        method: req.method, path: req.url, had_token: Boolean(bearer),
      });
      req.resume();
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({
        error: {
          message: 'Not an access token of the OAuth2 server',
          type: 'NotAuthorizedException',
          code: 401,
        },
      }));
      return;
    }
    log('gateway.accepted', {
      method: req.method,
      path: req.url,
      client_id: token.clientId,
      scope: token.scope ?? null,
      token_ref: ref(token.jti),
      expires_at: token.exp, // epoch seconds, as the store has it
    });
    if (seen++ === 0 && firstDelay > 0) {
      await new Promise((resolve) => { setTimeout(resolve, firstDelay * 1000); });
    }
    const headers = { ...req.headers, host: target.host, authorization: `Bearer ${upstreamToken}` };
    const forward = http.request({
      host: target.hostname,
      port: target.port,
      method: req.method,
      path: `${target.pathname.replace(/\/$/, '')}${req.url}`,
      headers,
    }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    });
    forward.on('error', (e) => {
      log('gateway.upstream_error', { message: e.message });
      res.writeHead(502);
      res.end();
    });
    req.pipe(forward);
  });
  gatewayPort = await listen(gateway, 0);
}

log('ready', { port: actualPort, gateway_port: gatewayPort, issuer });

process.on('SIGTERM', () => process.exit(0));
