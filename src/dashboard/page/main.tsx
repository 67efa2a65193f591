/** Entry of the dashboard bundle (scripts/build-dashboard.mjs): renders App into #app. */
import { render } from 'preact';
import { App } from './app.js';

render(<App />, document.getElementById('app')!);
