// Starts the page this is (ui.js, job_pages.js and cluster_pages.js are loaded first).
"use strict";

const PAGES = { jobs: jobsPage, job: jobPage, gpus: gpusPage, nodes: nodesPage, queue: queuePage, summaries: summariesPage };
if (PAGES[PAGE]) PAGES[PAGE]();
if (PAGE !== "error") connect();
