// What a DICOMweb viewer does, through dicomweb-client: store a file (when the query names one
// of this page's origin), then search studies, their series and instances, and for each instance
// retrieve its metadata, the instance and its first frame. The page shows what it found, or the
// first failure, in #status (data-state "done" or "failed") and a row per instance.
'use strict';

const query = new URLSearchParams(window.location.search);
const statusLine = document.getElementById('status');

function first(dataset, tag) {
  const element = dataset[tag];
  const value = element && element.Value ? element.Value[0] : undefined;
  return value !== null && typeof value === 'object' ? value.Alphabetic : value;
}

async function sha256(data) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

function addRow(cells) {
  const row = document.createElement('tr');
  for (const [name, text] of Object.entries(cells)) {
    const cell = document.createElement('td');
    cell.className = name;
    cell.textContent = String(text);
    row.appendChild(cell);
  }
  document.getElementById('instances').appendChild(row);
}

async function view() {
  const client = new DICOMwebClient.api.DICOMwebClient({ url: query.get('url') });
  if (query.has('store')) {
    const file = await (await fetch(query.get('store'))).arrayBuffer();
    await client.storeInstances({ datasets: [file] });
  }
  const studies = await client.searchForStudies();
  let seriesCount = 0;
  let instanceCount = 0;
  for (const study of studies) {
    const studyInstanceUID = first(study, '0020000D');
    const series = await client.searchForSeries({ studyInstanceUID });
    seriesCount += series.length;
    for (const oneSeries of series) {
      const seriesInstanceUID = first(oneSeries, '0020000E');
      const instances = await client.searchForInstances({ studyInstanceUID, seriesInstanceUID });
      instanceCount += instances.length;
      for (const instance of instances) {
        const uids = {
          studyInstanceUID,
          seriesInstanceUID,
          sopInstanceUID: first(instance, '00080018'),
        };
        const [metadata] = await client.retrieveInstanceMetadata(uids);
        const data = await client.retrieveInstance(uids);
        let frameBytes = '';
        if (metadata['7FE00010']) {
          const [frame] = await client.retrieveInstanceFrames({ ...uids, frameNumbers: [1] });
          frameBytes = frame.byteLength;
        }
        addRow({
          patient: first(study, '00100010'),
          study: studyInstanceUID,
          series: seriesInstanceUID,
          instance: uids.sopInstanceUID,
          'metadata-sop': first(metadata, '00080018'),
          bytes: data.byteLength,
          sha256: await sha256(data),
          'frame-bytes': frameBytes,
        });
      }
    }
  }
  statusLine.textContent = `${studies.length} studies, ${seriesCount} series, ${instanceCount} instances`;
  statusLine.dataset.state = 'done';
}

view().catch((error) => {
  statusLine.textContent = `failed: ${error.message} (HTTP status ${error.status})`;
  statusLine.dataset.state = 'failed';
});
