// Prints a fresh access token for a demo client, and nothing else.
//
//   node idp/token.mjs demo-admin [http://127.0.0.1:18300]

const client = process.argv[2] ?? 'demo-user';
const issuer = process.argv[3] ?? 'http://127.0.0.1:18300';
const secrets = { 'demo-user': 'demo-user-secret', 'demo-admin': 'demo-admin-secret' };

if (!(client in secrets)) {
  console.error(`unknown client ${client}; use demo-user or demo-admin`);
  process.exit(2);
}
const response = await fetch(`${issuer}/token`, {
  method: 'POST',
  headers: {
    authorization: `Basic ${Buffer.from(`${client}:${secrets[client]}`).toString('base64')}`,
    'content-type': 'application/x-www-form-urlencoded',
  },
  body: new URLSearchParams({ grant_type: 'client_credentials' }),
}).catch((error) => {
  console.error(`cannot reach the identity provider at ${issuer} (is \`make demo\` running?): ${error.message}`);
  process.exit(1);
});
const answer = await response.json();
if (!response.ok || !answer.access_token) {
  console.error(`the identity provider refused: ${JSON.stringify(answer)}`);
  process.exit(1);
}
process.stdout.write(`${answer.access_token}\n`);
