// The demo and test identity provider: oidc-provider issuing JWT access tokens to
// the client-credentials clients demo-user (role user) and demo-admin (role admin).
//
//   node idp/server.mjs [--port 18300] [--alg RS256|PS256|ES256|EdDSA]
//
// Prints one JSON line {"issuer", "port"} once it listens. POST /admin/rotate
// (?keep=1 keeps the old key published) signs from then on with a fresh key: a new
// provider is built with the new key first and takes over the request handler.
// Loopback only: this is a demo and test helper, not a product.

import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const index = args.indexOf(`--${name}`);
  return index >= 0 && args[index + 1] ? args[index + 1] : fallback;
};
const port = Number(option('port', '0'));
const alg = option('alg', 'RS256');
const audience = option('audience', 'https://api.gatehouse.demo');

const CLIENTS = [
  ['demo-user', 'demo-user-secret'],
  ['demo-admin', 'demo-admin-secret'],
].map(([id, secret]) => ({
  client_id: id,
  client_secret: secret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_basic',
}));
const ROLES = { 'demo-user': ['user'], 'demo-admin': ['admin', 'user'] };

function newKey() {
  const kid = crypto.randomUUID();
  const pair = alg.startsWith('ES')
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : alg === 'EdDSA'
      ? crypto.generateKeyPairSync('ed25519')
      : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

function build(issuer, keys) {
  return new Provider(issuer, {
    clients: CLIENTS,
    jwks: { keys },
    clientDefaults: { id_token_signed_response_alg: alg },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: '',
          audience,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg } },
        }),
      },
    },
    extraTokenClaims: (ctx, token) => ({ roles: ROLES[token.clientId] ?? [] }),
  });
}

let keys = [newKey()];
let issuer;
let handler;

const server = http.createServer((request, response) => {
  if (request.method === 'POST' && request.url.startsWith('/admin/rotate')) {
    const keep = new URL(request.url, issuer).searchParams.get('keep') === '1';
    keys = keep ? [newKey(), ...keys] : [newKey()];
    handler = build(issuer, keys).callback();
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ kids: keys.map((key) => key.kid) }));
    return;
  }
  handler(request, response);
});

server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  issuer = `http://127.0.0.1:${actual}`;
  handler = build(issuer, keys).callback();
  process.stdout.write(`${JSON.stringify({ issuer, port: actual })}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
