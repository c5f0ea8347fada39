#!/usr/bin/env node
// dicomstore from Node.js: Google's Cloud Healthcare API v1 over gRPC, with
// @grpc/grpc-js (the transport) and @grpc/proto-loader (the schema, read from
// the .proto files at run time: nothing is generated or compiled).
//
// What it does, in order:
//   1. DatasetService.CreateDataset       (a long-running operation, in Google's API)
//   2. DicomService.CreateDicomStore
//   3. DicomService.ListDicomStores       (every page)
//   4. DicomService.GetDicomStoreMetrics
//   5. DicomService.ImportDicomData       from the gs:// URI given as argument
//   6. google.longrunning.Operations.GetOperation, polled with backoff, printing
//      the progress counters of the operation's metadata (an OperationMetadata
//      packed in a google.protobuf.Any: see unpackAny)
//   7. DicomService.GetDicomStoreMetrics  again
//
// An existing dataset or store is reused, so the example can be run again.
//
//   npm ci
//   node dicomstore.mjs [--endpoint HOST:PORT] [--dataset ID] [--store ID] gs://BUCKET/PATH/**.dcm
//
// Against dicomstore, gs://BUCKET/OBJECT is the file DATA_DIR/gcs/BUCKET/OBJECT
// unless the server was given --gcs-endpoint.
//
// Exit codes: 0 done; 1 an RPC failed (the line on stderr names the method and
// the gRPC status); 2 bad usage or protos not found; 3 the import operation
// ended with an error (its sample errors are printed).

import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// grpc-js and proto-loader are CommonJS packages: import their default export.
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

// The files that define the services we call; proto-loader follows their
// imports (google/api/*, google/longrunning/*, google/rpc/*) through the include
// directories, and knows protobuf's well-known types (google/protobuf/*) itself.
const PROTO_FILES = [
  'google/cloud/healthcare/v1/dataset/dataset.proto',
  'google/cloud/healthcare/v1/dicom/dicom.proto',
  'google/cloud/healthcare/v1/operation.proto',
  'google/longrunning/operations.proto',
];

// The repository's layout: our protos, and the googleapis protos they import,
// which `python tools/generate_protos.py --buf-include build/buf-include` copies
// from the googleapis-common-protos Python package.
const DEFAULT_PROTO_PATH = [
  path.resolve(HERE, '../../../protos'),
  path.resolve(HERE, '../../../build/buf-include'),
];

const USAGE = `usage: node dicomstore.mjs [options] gs://BUCKET/PATH

options:
  --endpoint HOST:PORT  the gRPC port (env DICOMSTORE_GRPC_ENDPOINT, default localhost:50051)
  --project ID          (env DICOMSTORE_PROJECT, default demo)
  --location ID         (env DICOMSTORE_LOCATION, default local)
  --dataset ID          the dataset to create or reuse (env DICOMSTORE_DATASET, default hospital)
  --store ID            the DICOM store to create or reuse (default ct)
  --proto-path DIR      where the .proto files are, repeatable (env DICOMSTORE_PROTO_PATH,
                        separated by '${path.delimiter}'; default ../../../protos and
                        ../../../build/buf-include, the repository's layout)
  --timeout SECONDS     how long to wait for the import (default 600)
  -h, --help            this help`;

class UsageError extends Error {}

/** The .proto files are not where we were told to look. */
class SetupError extends Error {}

/** A failed RPC, with the method it came from and the gRPC status name. */
class RpcError extends Error {
  constructor(method, error) {
    // grpc-js errors carry the numeric status in `code` and the server's
    // message in `details`; grpc.status maps numbers to names both ways.
    super(`${method}: ${grpc.status[error.code] ?? error.code}: ${error.details}`);
    this.code = error.code;
  }
}

function parseOptions(argv, env) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      endpoint: { type: 'string', default: env.DICOMSTORE_GRPC_ENDPOINT || 'localhost:50051' },
      project: { type: 'string', default: env.DICOMSTORE_PROJECT || 'demo' },
      location: { type: 'string', default: env.DICOMSTORE_LOCATION || 'local' },
      dataset: { type: 'string', default: env.DICOMSTORE_DATASET || 'hospital' },
      store: { type: 'string', default: 'ct' },
      'proto-path': { type: 'string', multiple: true },
      timeout: { type: 'string', default: '600' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (positionals.length !== 1) {
    throw new UsageError('expected one gs://BUCKET/PATH argument');
  }
  const timeout = Number(values.timeout);
  if (!(timeout > 0)) {
    throw new UsageError(`--timeout must be a positive number of seconds, got ${values.timeout}`);
  }
  const protoPath =
    values['proto-path'] ??
    (env.DICOMSTORE_PROTO_PATH
      ? env.DICOMSTORE_PROTO_PATH.split(path.delimiter).filter(Boolean)
      : DEFAULT_PROTO_PATH);
  return { ...values, protoPath, timeout, source: positionals[0] };
}

/** Refuse early, and say what to do, when an include directory lacks a file we need. */
function checkProtoPath(protoPath) {
  for (const needed of [PROTO_FILES[1], 'google/api/annotations.proto']) {
    if (!protoPath.some((dir) => fs.existsSync(path.join(dir, needed)))) {
      throw new SetupError(
        `${needed} is in none of ${protoPath.join(', ')}; pass --proto-path ` +
          "(or DICOMSTORE_PROTO_PATH), or run 'python tools/generate_protos.py " +
          "--buf-include build/buf-include' at the repository's root",
      );
    }
  }
}

/**
 * Load the API twice over the same files:
 * - proto-loader's package definition, which grpc-js turns into client classes
 *   (`new api.google.cloud.healthcare.v1.dicom.DicomService(endpoint, credentials)`);
 * - a protobufjs Root, to decode google.protobuf.Any values. proto-loader hands
 *   an Any over as its type URL and raw bytes; decoding them takes the message
 *   type the URL names, which the Root can look up.
 */
function loadApi(protoPath) {
  const packageDefinition = protoLoader.loadSync(PROTO_FILES, {
    includeDirs: protoPath,
    keepCase: false, // lowerCamelCase fields, as in Google's JSON: dicomStoreId, instanceCount
    longs: String, // int64 as decimal strings: exact beyond 2^53
    enums: String, // enum values by name
    defaults: true, // unset scalars read as 0 / '' rather than undefined
    oneofs: true, // a oneof's name holds the field that is set: operation.result
  });
  const api = grpc.loadPackageDefinition(packageDefinition);

  const root = new protobuf.Root();
  root.resolvePath = (origin, target) =>
    protoPath.map((dir) => path.join(dir, target)).find((file) => fs.existsSync(file)) ?? target;
  root.loadSync(PROTO_FILES, { keepCase: false });
  return { api, root };
}

/**
 * Decode a google.protobuf.Any: `type_url` names the message type
 * (type.googleapis.com/google.cloud.healthcare.v1.OperationMetadata), `value`
 * holds that message's bytes. Returns a plain object with the same conversions
 * as proto-loader's, plus the type's name in `@type`.
 */
function unpackAny(root, any) {
  // protobufjs defines Any itself, without camelCasing its fields: `type_url`
  // even with keepCase: false.
  const typeUrl = any.type_url ?? any.typeUrl;
  const typeName = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
  let type;
  try {
    type = root.lookupType(typeName);
  } catch {
    return { '@type': typeName }; // a type our files do not define: leave it packed
  }
  const message = type.decode(any.value);
  return {
    '@type': typeName,
    ...type.toObject(message, { longs: String, enums: String, defaults: true }),
  };
}

/** A unary call as a promise, with a deadline (always set one: the default is none). */
function call(client, method, request, seconds = 30) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + seconds * 1000);
    client[method](request, { deadline }, (error, response) =>
      error ? reject(new RpcError(method, error)) : resolve(response),
    );
  });
}

/** `promise`'s result, or null when it failed with ALREADY_EXISTS. */
async function unlessExists(promise) {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof RpcError && error.code === grpc.status.ALREADY_EXISTS) return null;
    throw error;
  }
}

function counterLine(metadata) {
  const { success, failure, pending } = metadata.counter ?? {};
  return `success=${success ?? 0} failure=${failure ?? 0} pending=${pending ?? 0}`;
}

/**
 * Poll GetOperation until the operation is done, waiting longer after each
 * poll (250 ms, growing by half, at most 5 s). With `progress`, print the
 * counters of its metadata whenever they change. Returns the finished
 * operation and its decoded metadata.
 */
async function waitForOperation(operations, root, operation, { timeoutSeconds, progress }) {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let delay = 250;
  let printed = '';
  for (;;) {
    const metadata = operation.metadata ? unpackAny(root, operation.metadata) : {};
    const line = counterLine(metadata);
    if (progress && line !== printed) {
      console.log(`  ${operation.done ? 'done' : 'running'}: ${line}`);
      printed = line;
    }
    if (operation.done) return { operation, metadata };
    if (Date.now() + delay > deadline) {
      throw new Error(`${operation.name} is still running after ${timeoutSeconds} s`);
    }
    await sleep(delay);
    delay = Math.min(delay * 1.5, 5000);
    operation = await call(operations, 'GetOperation', { name: operation.name });
  }
}

/** Print why a finished operation failed: its status and the sample errors in its details. */
function reportFailure(root, operation, metadata) {
  const { error } = operation; // a google.rpc.Status: code, message, details (Any values)
  console.error(`import failed: ${grpc.status[error.code] ?? error.code}: ${error.message}`);
  for (const detail of error.details.map((any) => unpackAny(root, any))) {
    // ImportDicomDataErrorDetails: up to ten { resource, error } samples.
    for (const sample of detail.sampleErrors ?? []) {
      const code = grpc.status[sample.error?.code] ?? sample.error?.code;
      console.error(`  ${sample.resource}: ${code}: ${sample.error?.message}`);
    }
  }
  if (metadata.logsUrl) console.error(`  every failure: ${metadata.logsUrl}`);
}

function metricsLine(metrics) {
  return (
    `${metrics.studyCount} studies, ${metrics.seriesCount} series, ` +
    `${metrics.instanceCount} instances, ${metrics.blobStorageSizeBytes} bytes`
  );
}

async function run(options) {
  checkProtoPath(options.protoPath);
  const { api, root } = loadApi(options.protoPath);
  const v1 = api.google.cloud.healthcare.v1;

  // One channel per client here; plaintext, as dicomstore serves by default
  // (grpc.credentials.createSsl() for a server started with TLS).
  const credentials = grpc.credentials.createInsecure();
  const datasets = new v1.dataset.DatasetService(options.endpoint, credentials);
  const dicom = new v1.dicom.DicomService(options.endpoint, credentials);
  const operations = new api.google.longrunning.Operations(options.endpoint, credentials);

  try {
    // Google's resource names: projects/P/locations/L/datasets/D/dicomStores/S.
    const location = `projects/${options.project}/locations/${options.location}`;
    const dataset = `${location}/datasets/${options.dataset}`;
    const store = `${dataset}/dicomStores/${options.store}`;
    console.log(`endpoint ${options.endpoint}`);

    // CreateDataset answers a long-running operation whose response (an Any)
    // is the Dataset; dicomstore finishes it at once, Google may not.
    const creation = await unlessExists(
      call(datasets, 'CreateDataset', { parent: location, datasetId: options.dataset }),
    );
    if (creation === null) {
      console.log(`dataset ${dataset}: already exists`);
    } else {
      const { operation } = await waitForOperation(operations, root, creation, {
        timeoutSeconds: 60,
      });
      if (operation.result === 'error') {
        throw new RpcError('CreateDataset', {
          code: operation.error.code,
          details: operation.error.message,
        });
      }
      console.log(`dataset ${unpackAny(root, operation.response).name}: created`);
    }

    const created = await unlessExists(
      call(dicom, 'CreateDicomStore', {
        parent: dataset,
        dicomStoreId: options.store,
        dicomStore: { labels: { example: 'node' } },
      }),
    );
    console.log(`dicom store ${store}: ${created === null ? 'already exists' : 'created'}`);

    // List every page: follow nextPageToken until it is empty.
    const names = [];
    let pageToken = '';
    do {
      const page = await call(dicom, 'ListDicomStores', { parent: dataset, pageToken });
      names.push(...page.dicomStores.map((s) => s.name.slice(s.name.lastIndexOf('/') + 1)));
      pageToken = page.nextPageToken;
    } while (pageToken);
    console.log(`dicom stores in ${dataset}: ${names.join(' ')}`);

    const before = await call(dicom, 'GetDicomStoreMetrics', { name: store });
    console.log(`metrics before import: ${metricsLine(before)}`);

    const started = await call(dicom, 'ImportDicomData', {
      name: store,
      gcsSource: { uri: options.source },
    });
    console.log(`import of ${options.source}: operation ${started.name}`);
    const { operation, metadata } = await waitForOperation(operations, root, started, {
      timeoutSeconds: options.timeout,
      progress: true,
    });
    if (operation.result === 'error') {
      reportFailure(root, operation, metadata);
      return 3;
    }
    console.log(`import done: ${counterLine(metadata)}`);

    const after = await call(dicom, 'GetDicomStoreMetrics', { name: store });
    console.log(`metrics after import: ${metricsLine(after)}`);
    return 0;
  } finally {
    for (const client of [datasets, dicom, operations]) client.close();
  }
}

async function main() {
  try {
    process.exitCode = await run(parseOptions(process.argv.slice(2), process.env));
  } catch (error) {
    const usage = error instanceof UsageError || error.code?.startsWith?.('ERR_PARSE_ARGS');
    console.error(`error: ${error.message}`);
    if (usage) console.error(USAGE);
    process.exitCode = usage || error instanceof SetupError ? 2 : 1;
  }
}

await main();
