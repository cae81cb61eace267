// Frontend part of the fixture pack.
console.log("fl_utility_pack loaded");
