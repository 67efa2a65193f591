/**
 * Vitest setup file: after each test file (its own afterAll hooks run first,
 * hooks being stacked), the temp dirs it made with tempDir() are deleted.
 */
import { afterAll } from 'vitest';
import { removeTempDirs } from './processes.js';

afterAll(() => removeTempDirs());
